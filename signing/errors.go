package signing

import (
	"errors"
	"fmt"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Sentinel errors a caller can branch on with errors.Is. Client errors wrap
// both one of these and the original go-tuf error, so errors.As still finds
// go-tuf's concrete types (*metadata.ErrExpiredMetadata, ...) for details.
var (
	// ErrExpired: a signed role (root, timestamp, snapshot or targets) is past
	// its expiry at the client's reference time. The repository must be
	// re-signed (or the node's clock is wrong); retrying will not help.
	ErrExpired = errors.New("signed metadata expired")
	// ErrSignature: metadata lacks a threshold of valid signatures from the
	// keys the trusted root assigns to its role (bad signature, unknown key,
	// too few signatures).
	ErrSignature = errors.New("bad or insufficient signatures")
	// ErrRollback: a version is older than one already trusted, or does not
	// match the version the signed timestamp/snapshot pins (rollback,
	// mix-and-match of files from different repository states).
	ErrRollback = errors.New("metadata version rollback or mismatch")
	// ErrMismatch: downloaded bytes differ in length or hash from what signed
	// metadata says, including data longer than the signed or maximum length.
	ErrMismatch = errors.New("length or hash does not match signed metadata")
	// ErrDownload: the fetcher failed (network, registry, missing file). This
	// is the only class where retrying later is expected to help.
	ErrDownload = errors.New("download failed")
	// ErrInvalid: metadata is malformed or otherwise unacceptable.
	ErrInvalid = errors.New("invalid metadata")
	// ErrNotFound: the target is not listed in the trusted targets metadata.
	ErrNotFound = errors.New("target not found")
	// ErrNotRefreshed: Targets or Fetch was called before a successful Refresh.
	ErrNotRefreshed = errors.New("client not refreshed")
	// ErrTargetTooLarge: a target is larger than MaxTargetLength. Targets are
	// OCI manifests, never images: a large target is a publishing mistake
	// and downloading it would hold it all in memory.
	ErrTargetTooLarge = errors.New("target larger than allowed")

	// ErrRepoExists: InitRepo found an existing (or partially created)
	// repository in the directory.
	ErrRepoExists = errors.New("repository already exists")
	// ErrNotRepo: OpenRepo found no complete repository in the directory.
	ErrNotRepo = errors.New("not a sealift TUF repository")
	// ErrMissingKeys: the publisher holds fewer private keys for a role than
	// its threshold, so it cannot produce metadata clients would accept
	// (for example root keys kept offline).
	ErrMissingKeys = errors.New("not enough signing keys for role")
	// ErrTargetExists: AddNewTarget found the name already signed with
	// other content.
	ErrTargetExists = errors.New("target already signed with other content")
	// ErrBadName: a target name outside the allowed character set or shape.
	ErrBadName = errors.New("invalid target name")
	// ErrBadCustom: target custom metadata is not a JSON object that
	// canonical JSON can encode (no fractional or exponent numbers).
	ErrBadCustom = errors.New("invalid target custom metadata")
	// ErrBadOptions: invalid thresholds, key counts, expiries or roles.
	ErrBadOptions = errors.New("invalid options")
)

// classify wraps a go-tuf error with the sentinel for its class. The order
// matters: go-tuf's error types match several classes through their Is
// methods (every verification error Is *metadata.ErrRepository).
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var fe *fetchError
	var kind error
	switch {
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		kind = ErrExpired
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		kind = ErrSignature
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		kind = ErrRollback
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}),
		errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		kind = ErrMismatch
	case errors.As(err, &fe):
		kind = ErrDownload
	default:
		kind = ErrInvalid
	}
	return fmt.Errorf("signing: %s: %w: %w", op, kind, err)
}
