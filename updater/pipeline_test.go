package updater

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"sealift/bootloader"
	"sealift/partitions/verity"
)

// chunkedStream is an ImageStream that puts img in pieces of piece bytes
// from several goroutines in a shuffled order, as a release's parallel
// decoders do; edit may change the list of (offset, length) puts first.
func chunkedStream(img []byte, piece int, edit func(puts [][2]int) [][2]int) ImageStream {
	var puts [][2]int
	for off := 0; off < len(img); off += piece {
		puts = append(puts, [2]int{off, min(piece, len(img)-off)})
	}
	rand.New(rand.NewSource(1)).Shuffle(len(puts), func(i, j int) { puts[i], puts[j] = puts[j], puts[i] })
	if edit != nil {
		puts = edit(puts)
	}
	return func(ctx context.Context, get func(context.Context) ([]byte, error), put func([]byte, int64, int) error) error {
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		next := 0
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					if next >= len(puts) || firstErr != nil {
						mu.Unlock()
						return
					}
					p := puts[next]
					next++
					mu.Unlock()
					buf, err := get(ctx)
					if err == nil {
						n := min(len(buf), p[1])
						copy(buf[:n], img[min(p[0], len(img)):min(p[0]+n, len(img))])
						err = put(buf, int64(p[0]), n)
					}
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		return firstErr
	}
}

// TestInstallFromStream installs through an out-of-order stream, with
// direct I/O and without, and checks the slot and its verity root against
// a tree built from the image itself.
func TestInstallFromStream(t *testing.T) {
	img := image(11, 64*4096)
	salt := bytes.Repeat([]byte{7}, 32)
	p := verity.Params{Salt: salt, DataBlocks: uint64(len(img) / 4096), HashOffset: uint64(len(img))}
	want, _, err := verity.Build(bytes.NewReader(img), p, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "buffered"}[direct], func(t *testing.T) {
			r := newRig(t, backends[0].make)
			r.disk.noDirect = !direct
			rq := req(nil, "v1")
			rq.Image, rq.ImageSize, rq.Salt, rq.ExpectedRoot = nil, int64(len(img)), salt, want
			rq.Stream = chunkedStream(img, 8*4096, nil)
			res, err := r.u.Install(context.Background(), rq)
			if err != nil {
				t.Fatal(err)
			}
			if res.DirectIO != direct || (r.disk.directs > 0) != direct {
				t.Errorf("DirectIO %v, %d direct opens; want direct %v", res.DirectIO, r.disk.directs, direct)
			}
			if !bytes.Equal(r.disk.slots[bootloader.SlotA].data[:len(img)], img) {
				t.Fatal("slot does not hold the image")
			}
		})
	}
}

// TestInstallStreamMisbehaves: a stream that leaves a gap, puts a range
// twice, or puts outside the image or off the 4096 grid fails the install
// and nothing becomes bootable.
func TestInstallStreamMisbehaves(t *testing.T) {
	img := image(12, 32*4096)
	tests := []struct {
		name string
		edit func(puts [][2]int) [][2]int
		want string
	}{
		{"gap", func(p [][2]int) [][2]int { return p[1:] }, "delivered"},
		// Refused when it comes, before two hash workers write one digest.
		{"same range twice", func(p [][2]int) [][2]int { return append(p, p[0]) }, "was added twice"},
		{"beyond the end", func(p [][2]int) [][2]int { return append(p[1:], [2]int{len(img), 4096}) }, "put"},
		{"off the grid", func(p [][2]int) [][2]int { return append(p, [2]int{100, 4096}) }, "put"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, backends[0].make)
			rq := req(nil, "v1")
			rq.Image, rq.ImageSize = nil, int64(len(img))
			rq.Stream = chunkedStream(img, 4*4096, tc.edit)
			_, err := r.u.Install(context.Background(), rq)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			flags, _ := r.boot.Load()
			if d := r.boot.Simulate(flags); d.Slot != "" {
				t.Fatalf("slot bootable after a bad stream: %v", d)
			}
		})
	}
}

func TestInstallNeedsExactlyOneSource(t *testing.T) {
	r := newRig(t, backends[0].make)
	img := image(13, 8*4096)
	both := req(img, "v1")
	both.Stream = chunkedStream(img, 4096, nil)
	neither := req(img, "v1")
	neither.Image = nil
	digestOfStream := req(nil, "v1")
	digestOfStream.Image, digestOfStream.ImageSize = nil, int64(len(img))
	digestOfStream.Stream = chunkedStream(img, 4096, nil)
	digestOfStream.ImageDigest = "sha256:" + strings.Repeat("0", 64)
	for name, rq := range map[string]InstallRequest{"both": both, "neither": neither, "digest of a stream": digestOfStream} {
		if _, err := r.u.Install(context.Background(), rq); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: %v, want ErrBadInput", name, err)
		}
	}
}
