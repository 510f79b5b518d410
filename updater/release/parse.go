package release

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"sealift/partitions/verity"
)

// Descriptor is an OCI content descriptor, as far as releases use one.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	// URLs (foreign layers) and Data (embedded content) are decoded only
	// to be refused: every byte must come from the repository by digest.
	URLs []string `json:"urls,omitempty"`
	Data []byte   `json:"data,omitempty"`
}

// manifest is the OCI image manifest of a release.
type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Chunk is one compressed piece of the root image.
type Chunk struct {
	Index  int
	Offset int64  // byte offset in the uncompressed image
	Size   int64  // uncompressed bytes
	Digest string // sha256:<hex> of the uncompressed bytes
	Blob   Descriptor
	// Stored: the blob is the uncompressed bytes themselves.
	Stored bool
}

// Release is a parsed, validated release manifest and config.
type Release struct {
	// ManifestDigest is "sha256:<hex>" of Manifest, the value TUF signs.
	ManifestDigest string
	Manifest       []byte
	ConfigBlob     Descriptor
	Config         *Config
	Chunks         []Chunk
	Kernel         Descriptor
	Initrd         *Descriptor // nil when the release has none
}

// digestOf returns the "sha256:<hex>" digest of b.
func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// maxCompressedSize bounds a chunk blob: zstd never expands input by more
// than a few bytes per 128 KiB block, so anything far above the chunk size
// is not an honest chunk.
func maxCompressedSize(size int64) int64 { return size + size/128 + 64<<10 }

// ParseManifestConfig decodes just enough of a manifest to fetch its config
// blob: the config descriptor, checked for media type and size limits.
func ParseManifestConfig(manifestBytes []byte) (Descriptor, error) {
	m, err := decodeManifest(manifestBytes)
	if err != nil {
		return Descriptor{}, err
	}
	return m.Config, nil
}

func decodeManifest(b []byte) (*manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, invalid("manifest is %d bytes, more than %d", len(b), MaxManifestSize)
	}
	var m manifest
	if err := strictUnmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrInvalid, err)
	}
	if m.SchemaVersion != 2 {
		return nil, invalid("manifest schemaVersion %d must be 2", m.SchemaVersion)
	}
	if m.MediaType != MediaTypeManifest {
		return nil, invalid("manifest mediaType %q must be %q", m.MediaType, MediaTypeManifest)
	}
	if m.ArtifactType != ArtifactType {
		return nil, invalid("manifest artifactType %q must be %q", m.ArtifactType, ArtifactType)
	}
	if err := checkDescriptor(&m.Config, "config"); err != nil {
		return nil, err
	}
	if m.Config.MediaType != MediaTypeConfig {
		return nil, invalid("manifest config.mediaType %q must be %q", m.Config.MediaType, MediaTypeConfig)
	}
	if m.Config.Size > MaxConfigSize {
		return nil, invalid("manifest config.size %d exceeds %d", m.Config.Size, MaxConfigSize)
	}
	return &m, nil
}

func checkDescriptor(d *Descriptor, field string) error {
	if !digestRE.MatchString(d.Digest) {
		return invalid("manifest %s.digest %q must be sha256:<64 lower-case hex digits>", field, d.Digest)
	}
	if d.Size <= 0 {
		return invalid("manifest %s.size %d must be positive", field, d.Size)
	}
	if len(d.URLs) > 0 {
		return invalid("manifest %s has urls: foreign content is not allowed", field)
	}
	if len(d.Data) > 0 {
		return invalid("manifest %s has embedded data, which releases do not use", field)
	}
	return nil
}

// Parse validates a release manifest and its config blob and returns the
// release. configBlob must be the blob the manifest's config descriptor
// names (digest and size are checked). Every inconsistency is an error
// wrapping ErrInvalid that names the offending field.
func Parse(manifestBytes, configBlob []byte) (*Release, error) {
	m, err := decodeManifest(manifestBytes)
	if err != nil {
		return nil, err
	}
	if int64(len(configBlob)) != m.Config.Size {
		return nil, fmt.Errorf("%w: config blob is %d bytes, the manifest says %d", ErrSizeMismatch, len(configBlob), m.Config.Size)
	}
	if d := digestOf(configBlob); d != m.Config.Digest {
		return nil, fmt.Errorf("%w: config blob is %s, the manifest says %s", ErrDigestMismatch, d, m.Config.Digest)
	}
	cfg, err := ParseConfig(configBlob)
	if err != nil {
		return nil, err
	}
	r := &Release{
		ManifestDigest: digestOf(manifestBytes),
		Manifest:       manifestBytes,
		ConfigBlob:     m.Config,
		Config:         cfg,
	}
	var kernels, initrds int
	var next int64 // offset the next chunk must start at
	for i := range m.Layers {
		l := m.Layers[i]
		field := "layers[" + strconv.Itoa(i) + "]"
		if err := checkDescriptor(&l, field); err != nil {
			return nil, err
		}
		switch l.MediaType {
		case MediaTypeRootChunk, MediaTypeRootChunkStored:
			c, err := parseChunk(l, field, len(r.Chunks), next, cfg.Root)
			if err != nil {
				return nil, err
			}
			next += c.Size
			r.Chunks = append(r.Chunks, c)
		case MediaTypeKernel:
			kernels++
			r.Kernel = l
			if l.Digest != cfg.Kernel.Digest || l.Size != cfg.Kernel.Size {
				return nil, invalid("manifest %s: kernel layer %s (%d bytes) differs from config kernel %s (%d bytes)", field, l.Digest, l.Size, cfg.Kernel.Digest, cfg.Kernel.Size)
			}
		case MediaTypeInitrd:
			initrds++
			d := l
			r.Initrd = &d
			if cfg.Initrd == nil {
				return nil, invalid("manifest %s: initrd layer present but config has no initrd", field)
			}
			if l.Digest != cfg.Initrd.Digest || l.Size != cfg.Initrd.Size {
				return nil, invalid("manifest %s: initrd layer %s (%d bytes) differs from config initrd %s (%d bytes)", field, l.Digest, l.Size, cfg.Initrd.Digest, cfg.Initrd.Size)
			}
		default:
			return nil, invalid("manifest %s.mediaType %q is not a sealift layer type", field, l.MediaType)
		}
	}
	if kernels != 1 {
		return nil, invalid("manifest has %d kernel layers, want exactly 1", kernels)
	}
	if initrds > 1 || (initrds == 0 && cfg.Initrd != nil) {
		return nil, invalid("manifest has %d initrd layers, config says %t", initrds, cfg.Initrd != nil)
	}
	if next != cfg.Root.Size {
		return nil, invalid("manifest chunks cover %d bytes, config root.size is %d", next, cfg.Root.Size)
	}
	return r, nil
}

// parseChunk reads a chunk layer's annotations. Contiguity is checked by
// the caller, which knows where the previous chunk ended.
func parseChunk(l Descriptor, field string, index int, next int64, root RootConfig) (Chunk, error) {
	c := Chunk{Index: index, Blob: l}
	var err error
	if c.Offset, err = parseDecimal(l.Annotations[AnnotationChunkOffset]); err != nil {
		return c, invalid("manifest %s annotation %s: %v", field, AnnotationChunkOffset, err)
	}
	if c.Size, err = parseDecimal(l.Annotations[AnnotationChunkSize]); err != nil {
		return c, invalid("manifest %s annotation %s: %v", field, AnnotationChunkSize, err)
	}
	if c.Offset != next {
		return c, invalid("manifest %s: chunk at offset %d, expected the next chunk at %d (chunks must be contiguous, in order, from 0)", field, c.Offset, next)
	}
	c.Digest = l.Annotations[AnnotationChunkDigest]
	if !digestRE.MatchString(c.Digest) {
		return c, invalid("manifest %s annotation %s %q must be sha256:<64 lower-case hex digits>", field, AnnotationChunkDigest, c.Digest)
	}
	if c.Size <= 0 || c.Size%verity.BlockSize != 0 {
		return c, invalid("manifest %s annotation %s %d must be a positive multiple of %d", field, AnnotationChunkSize, c.Size, verity.BlockSize)
	}
	// Every chunk is chunk_size long except the last, which ends the image.
	if want := min(root.ChunkSize, root.Size-c.Offset); c.Size != want {
		return c, invalid("manifest %s annotation %s %d, want %d (chunk_size %d, root.size %d)", field, AnnotationChunkSize, c.Size, want, root.ChunkSize, root.Size)
	}
	if l.Size > maxCompressedSize(c.Size) {
		return c, invalid("manifest %s.size %d is too large for a %d-byte chunk", field, l.Size, c.Size)
	}
	if l.MediaType == MediaTypeRootChunkStored {
		// Stored bytes are the chunk: one size and one digest, twice.
		c.Stored = true
		if l.Size != c.Size || l.Digest != c.Digest {
			return c, invalid("manifest %s: a stored chunk's size and digest (%d, %s) must be its annotated size and digest (%d, %s)",
				field, l.Size, l.Digest, c.Size, c.Digest)
		}
	}
	return c, nil
}

// parseDecimal parses a non-negative decimal integer without sign, spaces
// or leading zeros, so that one number has exactly one spelling.
func parseDecimal(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("missing")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return n, nil
}
