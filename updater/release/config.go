package release

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"sealift/partitions/verity"
)

// Media types and annotations of the release format (docs/release-format.md).
const (
	MediaTypeManifest  = "application/vnd.oci.image.manifest.v1+json"
	ArtifactType       = "application/vnd.sealift.release.v1"
	MediaTypeConfig    = "application/vnd.sealift.release.config.v1+json"
	MediaTypeRootChunk = "application/vnd.sealift.root.chunk.v1+zstd"
	// MediaTypeRootChunkStored is a chunk stored as is: Build stores a
	// chunk that zstd cannot shrink by StoredMinSaving, so a node copies
	// it from the network into the slot instead of running it through a
	// decoder that would only copy it twice (random data, compressed
	// filesystems and firmware inside the image).
	MediaTypeRootChunkStored = "application/vnd.sealift.root.chunk.v1"
	MediaTypeKernel          = "application/vnd.sealift.kernel.v1"
	MediaTypeInitrd          = "application/vnd.sealift.initrd.v1"

	AnnotationChunkOffset = "org.sealift.chunk.offset"
	AnnotationChunkSize   = "org.sealift.chunk.size"
	AnnotationChunkDigest = "org.sealift.chunk.digest"

	// Standard OCI annotations the manifest carries for humans and tools.
	AnnotationTitle   = "org.opencontainers.image.title"
	AnnotationVersion = "org.opencontainers.image.version"
	AnnotationCreated = "org.opencontainers.image.created"
)

// Limits a node applies to what it downloads before anything is verified
// against a digest; they bound memory, not the size of a sane release.
const (
	// MaxManifestSize is the largest manifest Parse accepts (Distribution's
	// own limit is 4 MiB). 1 TiB of image in 4 MiB chunks fits.
	MaxManifestSize = 4 << 20
	// MaxConfigSize is the largest config blob accepted.
	MaxConfigSize = 1 << 20
	// MaxBootFileSize caps the kernel and the initrd, which are read into
	// memory for the ESP.
	MaxBootFileSize = 256 << 20
	// MaxChunkSize is the largest chunk size accepted.
	MaxChunkSize = 1 << 30
	// DefaultChunkSize is the uncompressed size of every chunk but the last.
	DefaultChunkSize = 32 << 20
	// MaxWindow is the largest zstd window a chunk may use: the decoder
	// refuses frames that would make it allocate more.
	MaxWindow = 8 << 20
	// MaxCmdline is the longest kernel command line accepted.
	MaxCmdline = 4096
)

// Config is the release's config blob: what the node needs besides the
// image bytes. Every field is described in docs/release-format.md.
type Config struct {
	Version string     `json:"version"`
	Variant string     `json:"variant"`
	Arch    string     `json:"arch"`
	Created time.Time  `json:"created"`
	Root    RootConfig `json:"root"`
	Kernel  BlobRef    `json:"kernel"`
	Initrd  *BlobRef   `json:"initrd,omitempty"`
	Cmdline string     `json:"cmdline"`
}

// RootConfig describes the uncompressed root image.
type RootConfig struct {
	Size      int64        `json:"size"`
	ChunkSize int64        `json:"chunk_size"`
	Verity    VerityConfig `json:"verity"`
}

// VerityConfig holds the dm-verity parameters of the root image, in
// sealift's layout: no superblock, the tree right after the image.
type VerityConfig struct {
	Algorithm     string `json:"algorithm"`
	DataBlockSize int    `json:"data_block_size"`
	HashBlockSize int    `json:"hash_block_size"`
	DataBlocks    uint64 `json:"data_blocks"`
	HashOffset    uint64 `json:"hash_offset"`
	Salt          string `json:"salt"`
	RootHash      string `json:"root_hash"`
}

// BlobRef names a layer by digest and size.
type BlobRef struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

var (
	tokenRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$`)
	archRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,31}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	hexRE    = regexp.MustCompile(`^([0-9a-f]{2})*$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks c on its own: every field well formed and the verity
// parameters consistent with the root size.
func (c *Config) Validate() error {
	if !tokenRE.MatchString(c.Version) {
		return invalid("config version %q must be 1-128 characters of [A-Za-z0-9._+~-]", c.Version)
	}
	if !tokenRE.MatchString(c.Variant) {
		return invalid("config variant %q must be 1-128 characters of [A-Za-z0-9._+~-]", c.Variant)
	}
	if !archRE.MatchString(c.Arch) {
		return invalid("config arch %q must be a lower-case architecture name such as amd64", c.Arch)
	}
	if c.Created.IsZero() || c.Created.Nanosecond() != 0 {
		return invalid("config created %q must be an RFC 3339 time in whole seconds", c.Created.Format(time.RFC3339Nano))
	}
	if err := c.Root.validate(); err != nil {
		return err
	}
	if err := c.Kernel.validate("kernel"); err != nil {
		return err
	}
	if c.Initrd != nil {
		if err := c.Initrd.validate("initrd"); err != nil {
			return err
		}
	}
	if len(c.Cmdline) > MaxCmdline || strings.ContainsAny(c.Cmdline, "\x00\n\r") {
		return invalid("config cmdline must be one line of at most %d bytes", MaxCmdline)
	}
	for _, f := range strings.Fields(c.Cmdline) {
		// sealift appends its own sealift.* parameters at install; a
		// second copy from the image would make the initramfs guess.
		if strings.HasPrefix(f, "sealift.") {
			return invalid("config cmdline parameter %q: sealift.* parameters are reserved for the updater", f)
		}
	}
	return nil
}

func (r *RootConfig) validate() error {
	if r.Size <= 0 || r.Size%verity.BlockSize != 0 {
		return invalid("config root.size %d must be a positive multiple of %d", r.Size, verity.BlockSize)
	}
	if r.ChunkSize <= 0 || r.ChunkSize%verity.BlockSize != 0 || r.ChunkSize > MaxChunkSize {
		return invalid("config root.chunk_size %d must be a positive multiple of %d, at most %d", r.ChunkSize, verity.BlockSize, MaxChunkSize)
	}
	v := &r.Verity
	if v.Algorithm != "sha256" {
		return invalid("config root.verity.algorithm %q must be \"sha256\"", v.Algorithm)
	}
	if v.DataBlockSize != verity.BlockSize {
		return invalid("config root.verity.data_block_size %d must be %d", v.DataBlockSize, verity.BlockSize)
	}
	if v.HashBlockSize != verity.BlockSize {
		return invalid("config root.verity.hash_block_size %d must be %d", v.HashBlockSize, verity.BlockSize)
	}
	if v.DataBlocks*verity.BlockSize != uint64(r.Size) {
		return invalid("config root.verity.data_blocks %d does not cover root.size %d (want %d)", v.DataBlocks, r.Size, r.Size/verity.BlockSize)
	}
	if v.HashOffset != uint64(r.Size) {
		return invalid("config root.verity.hash_offset %d must equal root.size %d (the tree follows the image)", v.HashOffset, r.Size)
	}
	if !hexRE.MatchString(v.Salt) || len(v.Salt)/2 > verity.MaxSaltSize {
		return invalid("config root.verity.salt must be lower-case hex of at most %d bytes", verity.MaxSaltSize)
	}
	if len(v.RootHash) != 2*verity.DigestSize || !hexRE.MatchString(v.RootHash) {
		return invalid("config root.verity.root_hash %q must be %d lower-case hex digits", v.RootHash, 2*verity.DigestSize)
	}
	return nil
}

func (b *BlobRef) validate(field string) error {
	if !digestRE.MatchString(b.Digest) {
		return invalid("config %s.digest %q must be sha256:<64 lower-case hex digits>", field, b.Digest)
	}
	if b.Size <= 0 || b.Size > MaxBootFileSize {
		return invalid("config %s.size %d must be between 1 and %d", field, b.Size, MaxBootFileSize)
	}
	return nil
}

// VerityParams returns the verity parameters and signed root hash of the
// root image, ready for the install (InstallRequest.Salt, ExpectedRoot).
// The salt is never nil, so an unsalted release stays unsalted rather than
// getting a random salt.
func (c *Config) VerityParams() (verity.Params, []byte) {
	salt, _ := hex.DecodeString(c.Root.Verity.Salt)
	if salt == nil {
		salt = []byte{}
	}
	root, _ := hex.DecodeString(c.Root.Verity.RootHash)
	return verity.Params{Salt: salt, DataBlocks: c.Root.Verity.DataBlocks, HashOffset: c.Root.Verity.HashOffset}, root
}

// ParseConfig decodes and validates a config blob. Unknown fields are an
// error: a field an old node would silently ignore needs a new media type.
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	if err := strictUnmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: config: %w", ErrInvalid, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// strictUnmarshal decodes one JSON value, refusing unknown fields and
// trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
