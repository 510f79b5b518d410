package oci

import (
	"context"
	"fmt"
	"net/http"
	"runtime"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryPublisher pushes to a registry repository with
// go-containerregistry's uploader (existing blobs are skipped, so chunks
// unchanged since the last release are not sent again).
type RegistryPublisher struct {
	o    RegistryOptions
	repo name.Repository
	auth authn.Authenticator
	base http.RoundTripper
}

// NewRegistryPublisher returns a Publisher for o.Repository (mirrors are
// ignored). Insecure, CAFile, credentials, Retries, Backoff, Timeout and
// UserAgent apply as for NewRegistry.
func NewRegistryPublisher(o RegistryOptions) (*RegistryPublisher, error) {
	o.defaults()
	base, err := o.baseTransport()
	if err != nil {
		return nil, err
	}
	repo, err := o.parseRepo(o.Repository)
	if err != nil {
		return nil, err
	}
	auth, err := o.authFor(repo)
	if err != nil {
		return nil, err
	}
	return &RegistryPublisher{o: o, repo: repo, auth: auth, base: base}, nil
}

func (p *RegistryPublisher) String() string { return "registry:" + p.o.Repository }

func (p *RegistryPublisher) options(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(p.auth),
		remote.WithTransport(p.base),
		remote.WithUserAgent(p.o.UserAgent),
		remote.WithJobs(max(2, runtime.NumCPU())),
		remote.WithRetryBackoff(remote.Backoff{Duration: p.o.Backoff, Factor: 2, Jitter: 0.5, Steps: p.o.Retries + 1, Cap: MaxBackoff}),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
	}
}

// PushImage implements Publisher.
func (p *RegistryPublisher) PushImage(ctx context.Context, img v1.Image, tag string) (string, []byte, error) {
	if !ValidTag(tag) {
		return "", nil, fmt.Errorf("%w: tag %q", ErrInvalidReference, tag)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return "", nil, err
	}
	if err := remote.Write(p.repo.Tag(tag), img, p.options(ctx)...); err != nil {
		return "", nil, fmt.Errorf("oci: push %s:%s: %w", p.repo, tag, explainPlainHTTP(err))
	}
	return digestOf(manifest), manifest, nil
}

// PushFile implements Publisher.
func (p *RegistryPublisher) PushFile(ctx context.Context, tag string, data []byte, mediaType string) error {
	img, err := FileImage(data, mediaType)
	if err != nil {
		return err
	}
	_, _, err = p.PushImage(ctx, img, tag)
	return err
}

// Delete removes the manifest a tag or digest names (registries that
// allow deletion only; Distribution needs storage.delete.enabled).
func (p *RegistryPublisher) Delete(ctx context.Context, ref string) error {
	if err := checkRef(ref); err != nil {
		return err
	}
	var r name.Reference = p.repo.Tag(ref)
	if isDigest(ref) {
		r = p.repo.Digest(ref)
	}
	if err := remote.Delete(r, p.options(ctx)...); err != nil {
		return fmt.Errorf("oci: delete %s: %w", r, err)
	}
	return nil
}
