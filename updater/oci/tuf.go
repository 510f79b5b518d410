package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"regexp"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

// maxFileManifest bounds the manifest of a TUF metadata artifact, which
// FileImage makes at about 500 bytes.
const maxFileManifest = 64 << 10

// targetLeafRE matches the last path element of a consistent-snapshot
// target download, "<sha256 hex>.<name>". No metadata file name can match:
// those start with a decimal version of at most 19 digits, or a role name.
var targetLeafRE = regexp.MustCompile(`^([0-9a-f]{64})\.(.+)$`)

// TUFFetcher returns a go-tuf fetcher that reads TUF metadata and targets
// from src. Only the last element of the requested path matters, so any
// metadata and target base URL work:
//
//   - "<sha256>.<name>" (a target under consistent snapshots) is the
//     manifest with digest sha256:<sha256>: the signed target IS the
//     release manifest, and its bytes are checked against that digest;
//   - anything else ("1.root.json", "timestamp.json", "3.snapshot.json",
//     "3.targets.json") is an OCI tag holding a FileImage artifact whose
//     single layer (MediaTypeTUFMetadata) is the file.
//
// A missing tag, manifest or layer returns &metadata.ErrDownloadHTTP{
// StatusCode: 404}, which is how go-tuf finds the newest root. More than
// maxLength bytes returns *metadata.ErrDownloadLengthMismatch, found from
// the descriptor before anything large is read. A tag whose layer blob is
// missing is an error, not a 404: the file exists, the copy is broken.
// The source's own timeouts apply (go-tuf's timeout argument is unused).
func TUFFetcher(src Source) fetcher.Fetcher {
	return TUFFetcherContext(context.Background(), src)
}

// TUFFetcherContext is TUFFetcher with requests under ctx, so that a
// shutting-down agent can abandon a refresh.
func TUFFetcherContext(ctx context.Context, src Source) fetcher.Fetcher {
	return &tufFetcher{ctx: ctx, src: src}
}

type tufFetcher struct {
	ctx context.Context
	src Source
}

func (f *tufFetcher) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	if maxLength < 0 {
		return nil, fmt.Errorf("oci tuf fetcher: negative maxLength %d", maxLength)
	}
	leaf := path.Base(urlPath)
	data, err := f.download(leaf, maxLength)
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, ErrNotFound):
		return nil, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: urlPath}
	case errors.Is(err, ErrTooLarge):
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: %v", urlPath, err)}
	default:
		return nil, fmt.Errorf("oci tuf fetcher: %s from %s: %w", urlPath, f.src, err)
	}
}

func (f *tufFetcher) download(leaf string, maxLength int64) ([]byte, error) {
	if m := targetLeafRE.FindStringSubmatch(leaf); m != nil {
		return f.src.Manifest(f.ctx, "sha256:"+m[1], maxLength)
	}
	if !ValidTag(leaf) {
		return nil, fmt.Errorf("%w: %q cannot be an OCI tag (role names must be tag-safe)", ErrInvalidReference, leaf)
	}
	manifest, err := f.src.Manifest(f.ctx, leaf, maxFileManifest)
	if err != nil {
		return nil, err
	}
	digest, size, err := FileFromManifest(manifest, MediaTypeTUFMetadata)
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", leaf, err)
	}
	if size > maxLength {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, leaf, size, maxLength)
	}
	data, err := ReadBlob(f.ctx, f.src, digest, size)
	if errors.Is(err, ErrNotFound) {
		// %v, not %w: this must not read as "no such file" to go-tuf.
		return nil, fmt.Errorf("tag %s exists but its layer is missing: %v", leaf, err)
	}
	return data, err
}
