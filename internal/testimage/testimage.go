// Package testimage generates root image contents for tests and
// benchmarks, so that every figure and golden file is computed from the
// same kinds of data.
package testimage

import (
	"math/rand/v2"
	"os"
)

// FSLike fills b with content that compresses about as well as a root
// filesystem (zstd -3 to about half): each 4 KiB block is random,
// text-like, zero, or a repeat of an earlier block, in equal shares. The
// same seed and length always give the same bytes.
func FSLike(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	const text = "the quick brown fox jumps over the lazy dog 0123456789\n"
	for off := 0; off < len(b); off += 4096 {
		blk := b[off:min(off+4096, len(b))]
		switch r.IntN(4) {
		case 0:
			for i := range blk {
				blk[i] = byte(r.Uint32())
			}
		case 1:
			for i := range blk {
				blk[i] = text[r.IntN(len(text))]
			}
		case 2:
			clear(blk)
		case 3:
			if off == 0 {
				clear(blk) // nothing earlier to repeat; b may hold old bytes
				break
			}
			src := (off / 2) &^ 4095
			copy(blk, b[src:src+len(blk)])
		}
	}
}

// Random fills b with random bytes from seed (zstd cannot shrink them).
func Random(b []byte, seed uint64) {
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)}).Read(b)
}

// WriteFile writes size bytes to path, 4 MiB at a time, each piece from
// fill with a seed derived from seed and the piece's number, and fsyncs
// it, so a large image never sits in memory.
func WriteFile(path string, size int64, seed uint64, fill func(b []byte, seed uint64)) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 4<<20)
	for i, done := uint64(0), int64(0); done < size; i++ {
		n := min(int64(len(buf)), size-done)
		fill(buf[:n], seed<<32|i)
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		done += n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
