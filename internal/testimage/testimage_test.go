package testimage

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestDeterministicAndShaped(t *testing.T) {
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	FSLike(a, 7)
	FSLike(b, 7)
	if !bytes.Equal(a, b) {
		t.Fatal("FSLike is not deterministic")
	}
	enc, _ := zstd.NewWriter(nil)
	if z := len(enc.EncodeAll(a, nil)); z < len(a)/4 || z > len(a)*3/4 {
		t.Errorf("fs-like data compresses to %d of %d bytes, want about half", z, len(a))
	}
	Random(b, 7)
	if z := len(enc.EncodeAll(b, nil)); z < len(b) {
		t.Errorf("random data compresses to %d of %d bytes", z, len(b))
	}
	p := filepath.Join(t.TempDir(), "img")
	if err := WriteFile(p, 9<<20, 3, FSLike); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	want := make([]byte, 1<<20)
	FSLike(want, 3<<32|2)
	if len(got) != 9<<20 || !bytes.Equal(got[8<<20:], want) {
		t.Fatal("WriteFile does not write the pieces fill gives")
	}
}
