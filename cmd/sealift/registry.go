package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/spf13/pflag"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/signing"
	"sealift/updater"
	"sealift/updater/config"
	"sealift/updater/oci"
)

// registryFlags name a registry repository (or an OCI layout directory)
// on the publisher's command line.
type registryFlags struct {
	repository   string
	layout       string
	insecure     bool
	caFile       string
	username     string
	passwordFile string
}

func (r *registryFlags) add(fs *pflag.FlagSet, what string) {
	fs.StringVar(&r.repository, "repository", "", what)
	fs.StringVar(&r.layout, "layout", "", "an OCI image layout directory instead of a registry")
	fs.BoolVar(&r.insecure, "insecure", false, "allow plain HTTP to the registry")
	fs.StringVar(&r.caFile, "ca-file", "", "extra PEM CA bundle for the registry")
	fs.StringVar(&r.username, "username", "", "registry user (else docker config.json credentials)")
	fs.StringVar(&r.passwordFile, "password-file", "", "file holding the registry password")
}

func (r *registryFlags) set() bool { return r.repository != "" || r.layout != "" }

func (r *registryFlags) options() (oci.RegistryOptions, error) {
	o := oci.RegistryOptions{Repository: r.repository, Insecure: r.insecure, CAFile: r.caFile, Username: r.username}
	if r.passwordFile != "" {
		b, err := os.ReadFile(r.passwordFile)
		if err != nil {
			return o, fmt.Errorf("--password-file: %w", err)
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
	}
	return o, nil
}

func (r *registryFlags) publisher() (oci.Publisher, error) {
	switch {
	case r.repository != "" && r.layout != "":
		return nil, usageError{"give --repository or --layout, not both"}
	case r.layout != "":
		return oci.NewLayoutPublisher(r.layout)
	case r.repository != "":
		o, err := r.options()
		if err != nil {
			return nil, err
		}
		return oci.NewRegistryPublisher(o)
	}
	return nil, usageError{"--repository or --layout is required"}
}

// pushMetadata pushes a TUF repository's metadata when a destination was
// given on the command line.
func (p *publishOpts) pushMetadata(g *globals, repo *signing.Repo) error {
	if !p.set() {
		return nil
	}
	pub, err := p.publisher()
	if err != nil {
		return err
	}
	if err := updater.PushMetadata(context.Background(), pub, repo); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "pushed TUF metadata to %s\n", pub)
	return nil
}

// imageFromLayout returns the image tagged tag in an OCI layout directory.
func imageFromLayout(dir, tag string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("open OCI layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, m := range im.Manifests {
		if m.Annotations[oci.AnnotationRefName] == tag {
			return idx.Image(m.Digest)
		}
	}
	return nil, fmt.Errorf("%w: OCI layout %s has no image tagged %q", updater.ErrBadInput, dir, tag)
}

// nodeSource opens the release source a node config names.
func nodeSource(c *config.Config) (oci.Source, error) {
	if c.Source.Layout != "" {
		return oci.NewLayout(c.Source.Layout)
	}
	pw, err := c.Source.Password()
	if err != nil {
		return nil, err
	}
	retries := c.Source.Retries
	if retries == 0 {
		retries = -1 // the config's 0 means none; the library's 0 means its default
	}
	return oci.NewRegistry(oci.RegistryOptions{
		Repository: c.Source.Repository, Mirrors: c.Source.Mirrors, Insecure: c.Source.Insecure,
		CAFile: c.Source.CAFile, Username: c.Source.Username, Password: pw,
		Retries: retries, Timeout: c.Source.Timeout.Duration, UserAgent: "sealift/" + version,
	})
}

// nodeTrust builds the node's TUF client over the source.
func nodeTrust(ctx context.Context, c *config.Config, src oci.Source) (*signing.Client, error) {
	root, err := os.ReadFile(c.Trust.Root)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	return signing.NewClient(signing.ClientOptions{
		TrustedRoot: root, CacheDir: c.Trust.CacheDir, Fetcher: oci.TUFFetcherContext(ctx, src),
		MetadataBaseURL: "oci", TargetBaseURL: "oci/targets",
	})
}
