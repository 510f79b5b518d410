package release

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"sealift/internal/kernelimage"
	"sealift/partitions/verity"
)

// BuildOptions describe the files and metadata of a release.
type BuildOptions struct {
	// RootImage is the path of the root filesystem image; its size must be
	// a positive multiple of 4096.
	RootImage string
	// Kernel (required) and Initrd (optional) are paths of boot files.
	Kernel, Initrd string
	Cmdline        string
	Version        string
	Variant        string
	Arch           string
	// ChunkSize is the uncompressed size of every chunk but the last;
	// 0 means DefaultChunkSize. A multiple of 4096.
	ChunkSize int64
	// Salt for the verity tree; nil draws a random one, an empty non-nil
	// slice means no salt.
	Salt []byte
	// ZstdLevel is the zstd level (1-22; 0 means 3). The encoder maps it
	// onto four speeds: 1, 2-5, 6-9 and 10-22 give the same output.
	ZstdLevel int
	// Created is recorded in the config, truncated to whole seconds in
	// UTC; zero means now. Fix it (and Salt) for reproducible builds.
	Created time.Time
	// Workers is how many chunks are compressed at once; 0 means one per
	// CPU. Memory is about 20 MiB per worker.
	Workers int
}

// checkKernel refuses a kernel file that no bootloader would start, or
// one for another architecture than the release's: a node would only find
// out when its bootloader failed to load it.
func checkKernel(path, arch string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("release: read kernel: %w", err)
	}
	info, err := kernelimage.Detect(data)
	if err == nil {
		err = kernelimage.CheckArch(info, arch)
	}
	if err != nil {
		return fmt.Errorf("%w: kernel %s: %v", ErrInvalid, path, err)
	}
	return nil
}

// Build builds a release from files. It computes the verity root hash of
// the root image, compresses its chunks in parallel (to learn their
// digests; nothing is kept in memory or on disk) and returns the release
// as a v1.Image for an OCI transport to push, and its config.
//
// The image reads the files again when its layers are pushed and
// recompresses the chunks, which reproduces the same bytes: a chunk whose
// content changed since Build fails its own digest check instead of
// uploading. The output depends only on the inputs, the options, the salt,
// the creation time and the compressor's version, so an unchanged chunk
// keeps its digest across releases and registries store it once.
func Build(o BuildOptions) (v1.Image, *Config, error) {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ZstdLevel == 0 {
		o.ZstdLevel = 3
	}
	if o.ZstdLevel < 1 || o.ZstdLevel > 22 {
		return nil, nil, fmt.Errorf("%w: zstd level %d is not 1-22", ErrInvalid, o.ZstdLevel)
	}
	if o.Created.IsZero() {
		o.Created = time.Now()
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	salt := o.Salt
	if salt == nil {
		var err error
		if salt, err = verity.NewSalt(); err != nil {
			return nil, nil, err
		}
	}
	if o.Kernel == "" {
		return nil, nil, fmt.Errorf("%w: no kernel given", ErrInvalid)
	}
	if err := checkKernel(o.Kernel, o.Arch); err != nil {
		return nil, nil, err
	}

	f, err := os.Open(o.RootImage)
	if err != nil {
		return nil, nil, fmt.Errorf("release: open root image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("release: stat root image: %w", err)
	}
	size := fi.Size()

	cfg := &Config{
		Version: o.Version,
		Variant: o.Variant,
		Arch:    o.Arch,
		Created: o.Created.UTC().Truncate(time.Second),
		Cmdline: o.Cmdline,
		Root: RootConfig{
			Size:      size,
			ChunkSize: o.ChunkSize,
			Verity: VerityConfig{
				Algorithm:     "sha256",
				DataBlockSize: verity.BlockSize,
				HashBlockSize: verity.BlockSize,
				DataBlocks:    uint64(size / verity.BlockSize),
				HashOffset:    uint64(size),
				Salt:          hex.EncodeToString(salt),
				// Filled in below; a placeholder lets Validate check the
				// rest before the expensive work.
				RootHash: hex.EncodeToString(make([]byte, verity.DigestSize)),
			},
		},
	}
	kernel, err := newFileLayer(o.Kernel, MediaTypeKernel, "vmlinuz")
	if err != nil {
		return nil, nil, err
	}
	cfg.Kernel = BlobRef{Digest: kernel.digest.String(), Size: kernel.size}
	var initrd *fileLayer
	if o.Initrd != "" {
		if initrd, err = newFileLayer(o.Initrd, MediaTypeInitrd, "initrd.img"); err != nil {
			return nil, nil, err
		}
		cfg.Initrd = &BlobRef{Digest: initrd.digest.String(), Size: initrd.size}
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}

	params := verity.DefaultParams(uint64(size/verity.BlockSize), salt)
	root, _, err := verity.Build(f, params, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("release: verity tree of %s: %w", o.RootImage, err)
	}
	cfg.Root.Verity.RootHash = hex.EncodeToString(root)

	chunks, err := compressChunks(f, o.RootImage, size, o.ChunkSize, o.ZstdLevel, o.Workers)
	if err != nil {
		return nil, nil, err
	}

	cfgBlob, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, err
	}
	img := &image{config: cfgBlob, layers: map[v1.Hash]partial.CompressedLayer{}}
	m := manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		ArtifactType:  ArtifactType,
		Config:        Descriptor{MediaType: MediaTypeConfig, Digest: digestOf(cfgBlob), Size: int64(len(cfgBlob))},
		Annotations: map[string]string{
			AnnotationVersion: cfg.Version,
			AnnotationCreated: cfg.Created.Format(time.RFC3339),
		},
	}
	for _, c := range chunks {
		m.Layers = append(m.Layers, Descriptor{
			MediaType: c.mediaType(),
			Digest:    c.digest.String(),
			Size:      c.csize,
			Annotations: map[string]string{
				AnnotationChunkOffset: strconv.FormatInt(c.off, 10),
				AnnotationChunkSize:   strconv.FormatInt(c.size, 10),
				AnnotationChunkDigest: c.rawDigest,
			},
		})
		img.layers[c.digest] = c
	}
	for _, l := range []*fileLayer{kernel, initrd} {
		if l == nil {
			continue
		}
		m.Layers = append(m.Layers, Descriptor{
			MediaType:   l.mediaType,
			Digest:      l.digest.String(),
			Size:        l.size,
			Annotations: map[string]string{AnnotationTitle: l.title},
		})
		img.layers[l.digest] = l
	}
	if img.manifest, err = json.Marshal(m); err != nil {
		return nil, nil, err
	}
	// What was built must be what nodes accept.
	if _, err := Parse(img.manifest, img.config); err != nil {
		return nil, nil, fmt.Errorf("release: built an invalid release: %w", err)
	}
	out, err := partial.CompressedToImage(img)
	if err != nil {
		return nil, nil, err
	}
	return out, cfg, nil
}

// newEncoder returns a zstd encoder with the settings every chunk uses.
// One goroutine per encoder: Build parallelises across chunks instead,
// and a single-threaded stream encoder is deterministic by construction.
func newEncoder(level int) (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(MaxWindow),
		zstd.WithEncoderCRC(true),
	)
}

// compress writes the zstd frame of src (size bytes) to w. The frame
// header records the content size, so the decoder knows it up front.
func compress(enc *zstd.Encoder, w io.Writer, src io.Reader, size int64) error {
	enc.ResetContentSize(w, size)
	n, err := enc.ReadFrom(src)
	if err == nil && n != size {
		err = fmt.Errorf("%w: read %d bytes of a %d-byte chunk", ErrSizeMismatch, n, size)
	}
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	return err
}

// chunkLayer is a root-image chunk, compressed on demand from the file.
type chunkLayer struct {
	path      string
	off, size int64
	level     int
	digest    v1.Hash // of the compressed bytes
	csize     int64
	rawDigest string // of the uncompressed bytes
	stored    bool   // zstd could not shrink it: the blob is the raw bytes
}

// StoredMinSaving: a chunk is compressed only if zstd saves at least this
// share of it (1/32, 1 MiB of a 32 MiB chunk); less is not worth a
// decoder's CPU on every node.
const StoredMinSaving = 32

func (c *chunkLayer) mediaType() string {
	if c.stored {
		return MediaTypeRootChunkStored
	}
	return MediaTypeRootChunk
}

func (c *chunkLayer) Digest() (v1.Hash, error)            { return c.digest, nil }
func (c *chunkLayer) Size() (int64, error)                { return c.csize, nil }
func (c *chunkLayer) MediaType() (types.MediaType, error) { return types.MediaType(c.mediaType()), nil }

// Compressed recompresses the chunk from the file into a pipe (or, for a
// stored chunk, reads it); the reader fails instead of ending if the bytes
// do not match the digest Build saw.
func (c *chunkLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(c.path)
	if err != nil {
		return nil, fmt.Errorf("release: reopen root image: %w", err)
	}
	what := fmt.Sprintf("chunk at offset %d of %s", c.off, c.path)
	if c.stored {
		return newCheckedReader(struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, c.off, c.size), f}, c.digest, c.csize, what), nil
	}
	enc, err := newEncoder(c.level)
	if err != nil {
		f.Close()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		err := compress(enc, pw, io.NewSectionReader(f, c.off, c.size), c.size)
		f.Close()
		pw.CloseWithError(err)
	}()
	return newCheckedReader(pr, c.digest, c.csize, what), nil
}

// compressChunks compresses every chunk once, workers at a time, and
// returns their digests and sizes.
func compressChunks(f *os.File, path string, size, chunkSize int64, level, workers int) ([]*chunkLayer, error) {
	n := int((size + chunkSize - 1) / chunkSize)
	chunks := make([]*chunkLayer, n)
	for i := range chunks {
		off := int64(i) * chunkSize
		chunks[i] = &chunkLayer{path: path, off: off, size: min(chunkSize, size-off), level: level}
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		for _, c := range chunks {
			c.path = abs // the image may be pushed after a chdir
		}
	}
	jobs := make(chan *chunkLayer)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range min(workers, n) {
		wg.Go(func() {
			enc, err := newEncoder(level)
			if err != nil {
				errs[w] = err
				for range jobs {
				}
				return
			}
			zh, rh := sha256.New(), sha256.New()
			for c := range jobs {
				if errs[w] != nil {
					continue
				}
				zh.Reset()
				rh.Reset()
				cw := &countWriter{w: zh}
				src := io.TeeReader(io.NewSectionReader(f, c.off, c.size), rh)
				if err := compress(enc, cw, src, c.size); err != nil {
					errs[w] = fmt.Errorf("release: compress chunk at offset %d: %w", c.off, err)
					continue
				}
				c.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(zh.Sum(nil))}
				c.csize = cw.n
				c.rawDigest = "sha256:" + hex.EncodeToString(rh.Sum(nil))
				if c.csize > c.size-c.size/StoredMinSaving {
					c.stored, c.csize = true, c.size
					c.digest, _ = v1.NewHash(c.rawDigest)
				}
			}
		})
	}
	for _, c := range chunks {
		jobs <- c
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return chunks, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// fileLayer is a boot file stored as it is.
type fileLayer struct {
	path, mediaType, title string
	digest                 v1.Hash
	size                   int64
}

func newFileLayer(path, mediaType, title string) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, MaxBootFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("release: read %s: %w", path, err)
	}
	if n > MaxBootFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, path, MaxBootFileSize)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return &fileLayer{path: abs, mediaType: mediaType, title: title,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, size: n}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return types.MediaType(l.mediaType), nil }

func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	return newCheckedReader(f, l.digest, l.size, l.path), nil
}

// checkedReader passes a layer's bytes through and, instead of io.EOF,
// returns an error if they are not the size and digest the manifest says:
// the source file changed after Build.
type checkedReader struct {
	r    io.ReadCloser
	h    hash.Hash
	want v1.Hash
	size int64
	n    int64
	what string
}

func newCheckedReader(r io.ReadCloser, want v1.Hash, size int64, what string) *checkedReader {
	return &checkedReader{r: r, h: sha256.New(), want: want, size: size, what: what}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if c.n > c.size {
		return n, fmt.Errorf("%w: %s is longer than the %d bytes built (changed since Build?)", ErrSizeMismatch, c.what, c.size)
	}
	if errors.Is(err, io.EOF) {
		if c.n != c.size {
			return n, fmt.Errorf("%w: %s is %d bytes, %d were built (changed since Build?)", ErrSizeMismatch, c.what, c.n, c.size)
		}
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want.Hex {
			return n, fmt.Errorf("%w: %s is sha256:%s, built as %s (changed since Build?)", ErrDigestMismatch, c.what, got, c.want)
		}
	}
	return n, err
}

func (c *checkedReader) Close() error { return c.r.Close() }

// image is a built release as a partial.CompressedImageCore.
type image struct {
	manifest, config []byte
	layers           map[v1.Hash]partial.CompressedLayer
}

func (i *image) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *image) MediaType() (types.MediaType, error) { return MediaTypeManifest, nil }
func (i *image) RawManifest() ([]byte, error)        { return i.manifest, nil }

func (i *image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("release: no layer %s in the image", h)
}
