// Package signing is sealift's TUF (The Update Framework) layer: a
// repository kept in a local directory on the publisher side (Repo) and a
// verifying client on the node side (Client), built on go-tuf v2. It
// carries bytes through any fetcher.Fetcher, so the same code works over an
// OCI registry, an OCI image layout or a plain directory (DirFetcher).
//
// # What is signed
//
// A release's TUF target is its OCI manifest, never the image: the
// target's sha256 is the manifest digest, and its custom metadata
// (version, variant, arch, rollout plan, halt/recall flags) is a JSON
// object signed with it. The manifest then pins config and layers by
// digest. Targets are capped at MaxTargetLength because go-tuf holds a
// downloaded target in memory.
//
// # Repository directory
//
//	repo.json                 format version and metadata lifetimes
//	keys/<role>/<keyid>.pem   ed25519 private keys, PKCS#8 PEM, 0600 (dirs 0700)
//	metadata/N.root.json      every root version, from 1 (clients walk the chain)
//	metadata/timestamp.json   the entry point, replaced atomically and last
//	metadata/N.snapshot.json  consistent snapshots: versioned file names
//	metadata/N.targets.json
//	targets/<dir>/<sha256>.<base>   target bytes at the path clients request
//
// Consistent snapshots are on. Defaults: threshold 1 and one key per role;
// root expires after 1 year (DefaultRootExpiry), targets after 90 days,
// snapshot after 7 days, timestamp after 1 day. Expiry dates are whole
// seconds in UTC. Older snapshot and targets versions stay on disk; Files
// returns only the current ones plus every root.
//
// Keeping metadata valid is the publisher's job: RefreshTimestamp from
// cron (it also re-signs the snapshot when the snapshot would expire
// within the new timestamp's lifetime), RefreshTargets before 90 days pass
// without a release change, RefreshRoot before a year passes. RotateKeys
// replaces a role's keys.
//
// # Paths a client requests
//
// With MetadataBaseURL M and TargetBaseURL T (default M + "/targets"):
//
//	M/<N>.root.json       N = trusted version + 1, + 2, ... until a 404
//	M/timestamp.json
//	M/<N>.snapshot.json   N from the timestamp
//	M/<N>.targets.json    N from the snapshot
//	T/<dir>/<sha256>.<base>   target "<dir>/<base>" (TargetURLPath)
//
// Every metadata file name is a valid OCI tag. A target path carries the
// sha256 of the manifest, so an OCI transport maps it to a fetch of the
// manifest by digest (SplitTargetPath); a file that does not exist must be
// reported as &metadata.ErrDownloadHTTP{StatusCode: 404}.
//
// # Errors
//
// Client errors wrap a sentinel (ErrExpired, ErrSignature, ErrRollback,
// ErrMismatch, ErrDownload, ErrInvalid, ErrNotFound) and go-tuf's original
// error. Only ErrDownload is worth retrying soon; the others mean the
// repository (or the node's clock) must change.
package signing
