package signing

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

// The fetcher contract, which DirFetcher follows and any transport (such
// as the OCI one) must follow too:
//
//   - DownloadFile(urlPath, maxLength, _) returns the whole file;
//   - a file that does not exist yields &metadata.ErrDownloadHTTP{StatusCode:
//     404}: that is how the client learns that N.root.json is the newest
//     root, so any other error for a missing root aborts the refresh;
//   - never more than maxLength bytes are read (read at most maxLength+1 to
//     notice the excess) and a longer file yields
//     *metadata.ErrDownloadLengthMismatch, so endless or oversized data
//     cannot exhaust memory;
//   - the timeout argument is unused (go-tuf deprecated it): a transport
//     applies its own timeouts.

var _ fetcher.Fetcher = (*DirFetcher)(nil)

// DirFetcher serves files from a file system tree, such as a Repo
// directory (MetadataBaseURL "metadata", TargetBaseURL "targets") or an
// unpacked copy of published metadata. URL paths are Prefix followed by a
// slash-separated path inside FS.
type DirFetcher struct {
	FS fs.FS
	// Prefix is stripped from every requested path; a path without it is
	// an error (a misconfiguration, not a missing file).
	Prefix string
}

// NewDirFetcher returns a DirFetcher for the directory dir, with no prefix.
// Symbolic links inside dir are followed; whatever is served is verified
// against signed metadata anyway.
func NewDirFetcher(dir string) *DirFetcher {
	return &DirFetcher{FS: os.DirFS(dir)}
}

// DownloadFile implements fetcher.Fetcher.
func (d *DirFetcher) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	rel, ok := strings.CutPrefix(urlPath, d.Prefix)
	if !ok {
		return nil, fmt.Errorf("dir fetcher: %q does not start with %q", urlPath, d.Prefix)
	}
	rel = strings.TrimPrefix(rel, "/")
	if !fs.ValidPath(rel) || rel == "." {
		return nil, fmt.Errorf("dir fetcher: invalid path %q", urlPath)
	}
	if maxLength < 0 {
		return nil, fmt.Errorf("dir fetcher: negative maxLength %d", maxLength)
	}
	f, err := d.FS.Open(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: urlPath}
	}
	if err != nil {
		return nil, fmt.Errorf("dir fetcher: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		if fi.IsDir() {
			return nil, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: urlPath}
		}
		// Size is only a hint (not every fs.FS knows it); the limited read
		// below is what enforces maxLength.
		if fi.Mode().IsRegular() && fi.Size() > maxLength {
			return nil, tooLong(urlPath, fi.Size(), maxLength)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxLength+1))
	if err != nil {
		return nil, fmt.Errorf("dir fetcher: read %s: %w", urlPath, err)
	}
	if int64(len(data)) > maxLength {
		return nil, tooLong(urlPath, int64(len(data)), maxLength)
	}
	return data, nil
}

func tooLong(urlPath string, n, maxLength int64) error {
	return &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: at least %d bytes, more than the allowed %d", urlPath, n, maxLength)}
}

// fetchError marks an error as coming from the transport, so the client
// can report ErrDownload for it rather than a verification failure. It
// unwraps to the original error: go-tuf looks for a 404
// *metadata.ErrDownloadHTTP through it.
type fetchError struct {
	url string
	err error
}

func (e *fetchError) Error() string { return fmt.Sprintf("fetch %s: %v", e.url, e.err) }
func (e *fetchError) Unwrap() error { return e.err }

// guardFetcher wraps the caller's fetcher: it tags transport errors, and
// re-checks maxLength so that a fetcher which ignores the limit is still
// caught (after the fact: its memory is already spent, which is why the
// limit belongs in the fetcher).
type guardFetcher struct{ f fetcher.Fetcher }

func (g guardFetcher) DownloadFile(urlPath string, maxLength int64, timeout time.Duration) ([]byte, error) {
	data, err := g.f.DownloadFile(urlPath, maxLength, timeout)
	if err != nil {
		return nil, &fetchError{url: urlPath, err: err}
	}
	if int64(len(data)) > maxLength {
		return nil, tooLong(urlPath, int64(len(data)), maxLength)
	}
	return data, nil
}

var hashedLeafRE = regexp.MustCompile(`^([0-9a-f]{64})\.(.+)$`)

// SplitTargetPath parses a target download path as the client requests it
// (targetBaseURL + TargetURLPath(name, sha256)) back into the target name
// and its sha256. A transport uses it to map a target download to a
// content-addressed fetch: for an OCI registry, the manifest with digest
// "sha256:" + sha256Hex. ok is false for any path that is not a target
// download below targetBaseURL (for example a metadata file).
func SplitTargetPath(urlPath, targetBaseURL string) (name, sha256Hex string, ok bool) {
	base := targetBaseURL
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	rel, ok := strings.CutPrefix(urlPath, base)
	if !ok {
		return "", "", false
	}
	dir, leaf := "", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		dir, leaf = rel[:i+1], rel[i+1:]
	}
	m := hashedLeafRE.FindStringSubmatch(leaf)
	if m == nil {
		return "", "", false
	}
	return dir + m[2], m[1], true
}
