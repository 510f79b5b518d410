package verity

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// pattern returns blocks*BlockSize bytes of deterministic data in which
// every block differs; testdata/verity/README.md documents the formula
// because the golden values were made from it with veritysetup.
func pattern(blocks uint64, seed byte) []byte {
	d := make([]byte, blocks*BlockSize)
	for k := range d {
		d[k] = byte(k%251) ^ byte(k>>12) ^ seed
	}
	return d
}

// refTree is a deliberately naive second implementation of the format,
// written straight from its description, for Build to agree with.
func refTree(data, salt []byte) (root, tree []byte) {
	digest := func(b []byte) []byte {
		s := sha256.Sum256(append(append([]byte{}, salt...), b...))
		return s[:]
	}
	var levels [][]byte
	cur := data
	for len(cur) > BlockSize {
		var next []byte
		for off := 0; off < len(cur); off += BlockSize {
			next = append(next, digest(cur[off:off+BlockSize])...)
		}
		for len(next)%BlockSize != 0 {
			next = append(next, 0)
		}
		levels = append(levels, next)
		cur = next
	}
	tree = []byte{}
	for i := len(levels) - 1; i >= 0; i-- {
		tree = append(tree, levels[i]...)
	}
	return digest(cur), tree
}

var testSalts = map[string][]byte{
	"empty": nil,
	"short": []byte("sea"),
	"32":    bytes.Repeat([]byte{0x5a}, 32),
	"64":    bytes.Repeat([]byte{0x17}, 64), // first salt long enough for the marshaled-state path
	"256":   bytes.Repeat([]byte{0xab}, 256),
}

func TestTreeSize(t *testing.T) {
	for _, tc := range []struct {
		blocks uint64
		want   uint64 // in hash blocks
	}{
		{0, 0}, {1, 0}, {2, 1}, {128, 1}, {129, 3}, {16384, 129}, {16385, 132},
		{262144, 2048 + 16 + 1}, // 1 GiB
	} {
		if got := TreeSize(tc.blocks); got != tc.want*BlockSize {
			t.Errorf("TreeSize(%d) = %d, want %d", tc.blocks, got, tc.want*BlockSize)
		}
	}
}

func TestBuildMatchesReference(t *testing.T) {
	for _, blocks := range []uint64{1, 2, 3, 127, 128, 129, 255, 256, 257, 1000, 128*128 + 1} {
		for name, salt := range testSalts {
			t.Run(fmt.Sprintf("%d/%s", blocks, name), func(t *testing.T) {
				data := pattern(blocks, byte(blocks))
				wantRoot, wantTree := refTree(data, salt)
				root, tree, err := Build(bytes.NewReader(data), DefaultParams(blocks, salt), 0)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(root, wantRoot) {
					t.Errorf("root %x, want %x", root, wantRoot)
				}
				if !bytes.Equal(tree, wantTree) {
					t.Errorf("tree differs (len %d, want %d)", len(tree), len(wantTree))
				}
				if uint64(len(tree)) != TreeSize(blocks) {
					t.Errorf("len(tree) = %d, TreeSize = %d", len(tree), TreeSize(blocks))
				}
			})
		}
	}
}

func TestBuildWorkers(t *testing.T) {
	// More blocks than several read chunks, with a partial last chunk.
	const blocks = 3*chunkSize/BlockSize + 77
	data := pattern(blocks, 9)
	wantRoot, wantTree := refTree(data, testSalts["32"])
	for _, workers := range []int{-1, 0, 1, 2, 3, 16} {
		t.Run(strconv.Itoa(workers), func(t *testing.T) {
			root, tree, err := Build(bytes.NewReader(data), DefaultParams(blocks, testSalts["32"]), workers)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(root, wantRoot) || !bytes.Equal(tree, wantTree) {
				t.Errorf("workers=%d: tree or root differs from reference", workers)
			}
		})
	}
}

func TestBuilderOutOfOrderConcurrent(t *testing.T) {
	for _, blocks := range []uint64{1, 2, 129, 128*128 + 1} {
		for name, salt := range testSalts {
			t.Run(fmt.Sprintf("%d/%s", blocks, name), func(t *testing.T) {
				data := pattern(blocks, 3)
				p := DefaultParams(blocks, salt)
				wantRoot, wantTree, err := Build(bytes.NewReader(data), p, 1)
				if err != nil {
					t.Fatal(err)
				}

				// Cut into random disjoint ranges, shuffle, and feed them
				// from several goroutines through a scratch copy that is
				// overwritten after Add returns (Add must not retain it).
				rng := rand.New(rand.NewPCG(blocks, 1))
				type span struct{ lo, hi uint64 }
				var spans []span
				for lo := uint64(0); lo < blocks; {
					hi := min(lo+1+rng.Uint64N(300), blocks)
					spans = append(spans, span{lo, hi})
					lo = hi
				}
				rng.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })

				b, err := NewBuilder(p)
				if err != nil {
					t.Fatal(err)
				}
				ch := make(chan span)
				var wg sync.WaitGroup
				errs := make(chan error, 4)
				for range 4 {
					wg.Go(func() {
						var scratch []byte
						for s := range ch {
							scratch = append(scratch[:0], data[s.lo*BlockSize:s.hi*BlockSize]...)
							if err := b.Add(s.lo, scratch); err != nil {
								errs <- err
								return
							}
							clear(scratch)
						}
					})
				}
				for _, s := range spans {
					ch <- s
				}
				close(ch)
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
				root, tree, err := b.Finish()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(root, wantRoot) || !bytes.Equal(tree, wantTree) {
					t.Errorf("builder result differs from Build")
				}
			})
		}
	}
}

func TestBuilderErrors(t *testing.T) {
	block := make([]byte, BlockSize)
	for _, tc := range []struct {
		name string
		run  func(b *Builder) error
		want string
	}{
		{"missing first", func(b *Builder) error {
			return b.Add(1, make([]byte, 9*BlockSize))
		}, "1 of 10 data blocks never added (first missing: 0)"},
		{"missing middle", func(b *Builder) error {
			if err := b.Add(0, make([]byte, 4*BlockSize)); err != nil {
				return err
			}
			return b.Add(6, make([]byte, 4*BlockSize))
		}, "2 of 10 data blocks never added (first missing: 4)"},
		{"duplicate", func(b *Builder) error {
			if err := b.Add(0, make([]byte, 4*BlockSize)); err != nil {
				return err
			}
			return b.Add(3, make([]byte, 2*BlockSize))
		}, "block 3 was added twice"},
		{"partial block", func(b *Builder) error { return b.Add(0, make([]byte, 100)) }, "not a multiple"},
		{"past end", func(b *Builder) error { return b.Add(9, make([]byte, 2*BlockSize)) }, "outside the 10 data blocks"},
		{"start past end", func(b *Builder) error { return b.Add(11, nil) }, "outside the 10 data blocks"},
		{"overflowing range", func(b *Builder) error { return b.Add(^uint64(0), block) }, "outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewBuilder(DefaultParams(10, nil))
			if err != nil {
				t.Fatal(err)
			}
			err = tc.run(b)
			if err == nil {
				_, _, err = b.Finish()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}

	t.Run("after finish", func(t *testing.T) {
		b, _ := NewBuilder(DefaultParams(1, nil))
		if err := b.Add(0, block); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Finish(); err != nil {
			t.Fatal(err)
		}
		if err := b.Add(0, block); !errors.Is(err, ErrFinished) {
			t.Errorf("Add after Finish: %v", err)
		}
		if _, _, err := b.Finish(); !errors.Is(err, ErrFinished) {
			t.Errorf("second Finish: %v", err)
		}
	})
}

func TestParamsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Params
		want string // "" = valid
	}{
		{"zero blocks", Params{}, "no data blocks"},
		{"one block", DefaultParams(1, nil), ""},
		{"unaligned offset", Params{DataBlocks: 2, HashOffset: 8193}, "not a multiple"},
		{"salt 256", DefaultParams(2, make([]byte, 256)), ""},
		{"salt 257", DefaultParams(2, make([]byte, 257)), "longer than 256"},
		{"too many blocks", DefaultParams(1<<62, nil), "too many"},
		{"huge offset", Params{DataBlocks: 2, HashOffset: 1 << 63}, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if _, err := NewBuilder(tc.p); err == nil {
				t.Error("NewBuilder accepted invalid params")
			}
			if _, _, err := Build(bytes.NewReader(nil), tc.p, 1); err == nil {
				t.Error("Build accepted invalid params")
			}
		})
	}
}

func TestBuildShortDevice(t *testing.T) {
	data := pattern(10, 0)
	_, _, err := Build(bytes.NewReader(data[:9*BlockSize+5]), DefaultParams(10, nil), 2)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
}

type failingReader struct{ err error }

func (f failingReader) ReadAt([]byte, int64) (int, error) { return 0, f.err }

func TestBuildReadError(t *testing.T) {
	boom := errors.New("boom")
	_, _, err := Build(failingReader{boom}, DefaultParams(5000, nil), 2)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want wrapped boom", err)
	}
}

// device returns data followed by its tree at p.HashOffset, as sealift lays
// a slot out.
func device(t *testing.T, data []byte, p Params) (dev, root []byte) {
	t.Helper()
	root, tree, err := Build(bytes.NewReader(data), p, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev = make([]byte, p.HashOffset+uint64(len(tree)))
	copy(dev, data)
	copy(dev[p.HashOffset:], tree)
	return dev, root
}

func TestVerify(t *testing.T) {
	type flip struct {
		off       uint64 // byte to flip on the device
		wantLevel int
		wantBlock uint64
	}
	for _, tc := range []struct {
		name   string
		blocks uint64
		gap    uint64 // extra bytes between data and tree
		salt   []byte
		flips  []flip
	}{
		{"one block", 1, 0, nil, []flip{{0, LevelData, 0}, {4095, LevelData, 0}}},
		{"two blocks", 2, 0, testSalts["short"], []flip{
			{BlockSize + 17, LevelData, 1},
			{2 * BlockSize, 0, 0},               // digest of block 0
			{2*BlockSize + BlockSize - 1, 0, 0}, // zero padding is covered too
		}},
		{"three levels", 128*128 + 1, 3 * BlockSize, testSalts["32"], []flip{
			{0, LevelData, 0},
			{12345 * BlockSize, LevelData, 12345},
			{16384*BlockSize + 1, LevelData, 16384},
			// Tree: level 2 (1 block), level 1 (2 blocks), level 0 (129 blocks).
			{(16385 + 3) * BlockSize, 2, 0},
			{(16385+3+1+1)*BlockSize + 100, 1, 1},
			{(16385+3+1+2+5)*BlockSize + 64, 0, 5},
			{(16385+3+1+2+128)*BlockSize + 33, 0, 128},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams(tc.blocks, tc.salt)
			p.HashOffset += tc.gap
			dev, root := device(t, pattern(tc.blocks, 1), p)
			if err := Verify(bytes.NewReader(dev), p, root, 0); err != nil {
				t.Fatalf("intact device: %v", err)
			}
			for _, f := range tc.flips {
				bad := bytes.Clone(dev)
				bad[f.off] ^= 0x01
				err := Verify(bytes.NewReader(bad), p, root, 2)
				var me *MismatchError
				if !errors.As(err, &me) {
					t.Fatalf("flip at %d: err = %v, want *MismatchError", f.off, err)
				}
				if me.Level != f.wantLevel || me.Block != f.wantBlock {
					t.Errorf("flip at %d: got level %d block %d, want level %d block %d",
						f.off, me.Level, me.Block, f.wantLevel, f.wantBlock)
				}
				if f.off/BlockSize != me.Offset/BlockSize {
					t.Errorf("flip at %d: error names offset %d", f.off, me.Offset)
				}
			}

			// A wrong root is blamed on the top of the tree.
			wrong := bytes.Clone(root)
			wrong[0] ^= 0x80
			var me *MismatchError
			if err := Verify(bytes.NewReader(dev), p, wrong, 1); !errors.As(err, &me) {
				t.Fatalf("wrong root: %v", err)
			}
			if wantLevel := len(levelBlocks(tc.blocks)) - 1; me.Level != wantLevel || me.Block != 0 {
				t.Errorf("wrong root: level %d block %d, want level %d block 0", me.Level, me.Block, wantLevel)
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	p := DefaultParams(200, nil)
	dev, root := device(t, pattern(200, 0), p)
	if err := Verify(bytes.NewReader(dev[:len(dev)-1]), p, root, 1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated tree: %v", err)
	}
	if err := Verify(bytes.NewReader(dev), p, root[:31], 1); err == nil {
		t.Error("short root accepted")
	}
	overlap := p
	overlap.HashOffset = 0
	if err := Verify(bytes.NewReader(dev), overlap, root, 1); err == nil || !strings.Contains(err.Error(), "inside") {
		t.Errorf("overlapping hash area: %v", err)
	}
}

func TestGolden(t *testing.T) {
	f, err := os.Open("../../testdata/verity/golden.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var blocks, seed, treeBytes uint64
		var saltHex, rootHex, treeSum string
		if _, err := fmt.Sscan(line, &blocks, &seed, &saltHex, &rootHex, &treeBytes, &treeSum); err != nil {
			t.Fatalf("golden line %q: %v", line, err)
		}
		var salt []byte
		if saltHex != "-" {
			if salt, err = hex.DecodeString(saltHex); err != nil {
				t.Fatal(err)
			}
		}
		n++
		t.Run(fmt.Sprintf("%d/salt%d", blocks, len(salt)), func(t *testing.T) {
			root, tree, err := Build(bytes.NewReader(pattern(blocks, byte(seed))), DefaultParams(blocks, salt), 0)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(root) != rootHex {
				t.Errorf("root %x, veritysetup says %s", root, rootHex)
			}
			sum := sha256.Sum256(tree)
			if uint64(len(tree)) != treeBytes || hex.EncodeToString(sum[:]) != treeSum {
				t.Errorf("tree: %d bytes sha256 %x, veritysetup: %d bytes %s", len(tree), sum, treeBytes, treeSum)
			}
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("only %d golden cases", n)
	}
}

func TestKernelTable(t *testing.T) {
	root, _ := hex.DecodeString("845d5028c7b0e732296b9494d15f4ce665501a126f616b809c984f324f467046")
	for _, tc := range []struct {
		p    Params
		want string
	}{
		{Params{Salt: []byte{0xde, 0xad}, DataBlocks: 262144, HashOffset: 262144 * 4096},
			"0 2097152 verity 1 /dev/sda3 /dev/sda3 4096 4096 262144 262144 sha256 " +
				"845d5028c7b0e732296b9494d15f4ce665501a126f616b809c984f324f467046 dead"},
		{Params{DataBlocks: 2, HashOffset: 0},
			"0 16 verity 1 /dev/vda /dev/vdb 4096 4096 2 0 sha256 " +
				"845d5028c7b0e732296b9494d15f4ce665501a126f616b809c984f324f467046 -"},
	} {
		dataDev, hashDev := "/dev/sda3", "/dev/sda3"
		if tc.p.HashOffset == 0 {
			dataDev, hashDev = "/dev/vda", "/dev/vdb"
		}
		if got := KernelTable(tc.p, root, dataDev, hashDev); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestNewSalt(t *testing.T) {
	a, err := NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 32 || len(b) != 32 || bytes.Equal(a, b) {
		t.Errorf("salts %x and %x", a, b)
	}
}

func TestMismatchErrorMessage(t *testing.T) {
	var err error = fmt.Errorf("slot B: %w", &MismatchError{Level: 1, Block: 2, Offset: 8192})
	var me *MismatchError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "hash block 2 of level 1") {
		t.Errorf("%v", err)
	}
	if s := (&MismatchError{Level: LevelData, Block: 7, Offset: 7 * 4096}).Error(); !strings.Contains(s, "data block 7") {
		t.Errorf("%s", s)
	}
}

func BenchmarkBuild(b *testing.B) {
	const blocks = 64 << 20 / BlockSize
	data := pattern(blocks, 0)
	p := DefaultParams(blocks, testSalts["32"])
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Build(bytes.NewReader(data), p, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuilderAdd(b *testing.B) {
	const blocks = 1024
	data := pattern(blocks, 0)
	bl, _ := NewBuilder(DefaultParams(blocks, testSalts["32"]))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := bl.Add(0, data); err != nil {
			b.Fatal(err)
		}
	}
}
