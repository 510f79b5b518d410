package partitions

import (
	"errors"
	"testing"

	"sealift/bootloader"
)

func TestStartWriteback(t *testing.T) {
	d := openDisk(t, newDisk(t), true)
	a := d.Slot(bootloader.SlotA)
	pio, err := d.OpenPartition(a)
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	if _, err := pio.WriteAt(pattern(8192, 3), 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		off, n  int64
		outside bool
	}{
		{"written range", 0, 8192, false},
		{"whole partition", 0, a.Size, false},
		{"past the end", a.Size - 4096, 8192, true},
		{"negative offset", -512, 512, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pio.StartWriteback(tc.off, tc.n)
			if tc.outside != errors.Is(err, ErrOutOfBounds) || (!tc.outside && err != nil) {
				t.Fatalf("StartWriteback(%d, %d) = %v", tc.off, tc.n, err)
			}
		})
	}
}
