package main

import (
	"os"
	"path/filepath"
	"testing"

	"sealift/bootloader"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"4096", 4096, false},
		{"512M", 512 << 20, false},
		{"4G", 4 << 30, false},
		{"1GiB", 1 << 30, false},
		{"64MB", 64 << 20, false},
		{"2k", 2048, false},
		{"", 0, true},
		{"-1G", 0, true},
		{"lots", 0, true},
		{"99999999999T", 0, true},
	}
	for _, c := range cases {
		got, err := parseSize(c.in)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, bad=%v", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestCmdlineRuntime(t *testing.T) {
	cases := []struct {
		cmdline string
		want    bootloader.Slot
		bad     bool
	}{
		{"console=ttyS0 sealift.slot=B ro", bootloader.SlotB, false},
		{"sealift.slot=A", bootloader.SlotA, false},
		{"console=ttyS0 ro", "", true},
		{"sealift.slot=C", "", true},
		// An earlier copy (from an old install's command line) loses to
		// the bootloader's, which comes last.
		{"console=ttyS0 sealift.slot=A ro sealift.slot=B", bootloader.SlotB, false},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "cmdline")
		if err := os.WriteFile(p, []byte(c.cmdline+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := cmdlineRuntime{path: p}.RunningSlot()
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("%q: got %q, %v", c.cmdline, got, err)
		}
	}
}
