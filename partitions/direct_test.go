package partitions

import (
	"errors"
	"testing"

	"sealift/bootloader"
	"sealift/internal/aligned"
)

func TestPartIODirect(t *testing.T) {
	p := newDisk(t)
	d := openDisk(t, p, true)
	a := d.Slot(bootloader.SlotA)
	before := pattern(4096, 0x5a)
	writeRange(t, p, a.Start-4096, before)

	buffered, err := d.OpenPartition(a)
	if err != nil {
		t.Fatal(err)
	}
	defer buffered.Close()
	// Cache a page of the slot through the buffered descriptor: a direct
	// write must not leave it stale.
	stale := make([]byte, 4096)
	if _, err := buffered.ReadAt(stale, 0); err != nil {
		t.Fatal(err)
	}
	dio, err := buffered.OpenDirect()
	if err != nil {
		t.Fatalf("OpenDirect on %s: %v", p, err)
	}
	defer dio.Close()
	if !dio.Direct() || buffered.Direct() {
		t.Fatal("Direct() wrong")
	}
	blk := aligned.Buffer(8192)
	copy(blk, pattern(8192, 7))
	for _, tc := range []struct {
		name   string
		buf    []byte
		off    int64
		target error
	}{
		{"first blocks", blk, 0, nil},
		{"last block", blk[:4096], a.Size - 4096, nil},
		{"offset not a multiple of 4096", blk[:4096], 512, ErrMisaligned},
		{"length not a multiple of 4096", blk[:512], 0, ErrMisaligned},
		{"buffer not aligned", blk[512 : 512+4096], 4096, ErrMisaligned},
		{"across the end", blk, a.Size - 4096, ErrOutOfBounds},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := dio.WriteAt(tc.buf, tc.off)
			if tc.target == nil {
				if err != nil || n != len(tc.buf) {
					t.Fatalf("WriteAt: %d, %v", n, err)
				}
				return
			}
			if n != 0 {
				t.Errorf("wrote %d bytes", n)
			}
			wantErr(t, err, tc.target)
		})
	}
	if err := dio.StartWriteback(0, 8192); err != nil {
		t.Errorf("StartWriteback on a direct PartIO: %v", err)
	}
	if err := dio.Sync(); err != nil {
		t.Fatal(err)
	}
	// Direct reads come from the device, buffered reads from a page cache
	// the direct write invalidated: both see the new bytes.
	back := aligned.Buffer(8192)
	if _, err := dio.ReadAt(back, 0); err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "direct read back", back, blk)
	if _, err := dio.ReadAt(back[1:4097], 0); !errors.Is(err, ErrMisaligned) {
		t.Errorf("misaligned direct read: %v", err)
	}
	if _, err := buffered.ReadAt(stale, 0); err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "buffered read after the direct write", stale, blk[:4096])
	equalBytes(t, "bytes before the slot", readRange(t, p, a.Start-4096, 4096), before)
	equalBytes(t, "last block", readRange(t, p, a.End()-4096, 4096), blk[:4096])

	// A read-only disk gives a read-only direct PartIO.
	dio.Close()
	buffered.Close()
	d.Close()
	ro := openDisk(t, p, false)
	rio, err := ro.OpenPartition(ro.Slot(bootloader.SlotA))
	if err != nil {
		t.Fatal(err)
	}
	defer rio.Close()
	rdio, err := rio.OpenDirect()
	if err != nil {
		t.Fatal(err)
	}
	defer rdio.Close()
	if _, err := rdio.WriteAt(blk[:4096], 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write through a read-only direct PartIO: %v", err)
	}
}
