package kernelimage

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The layouts below are built here from the documented headers
// (Documentation/arch/x86/boot.rst, Documentation/arch/arm64/booting.rst,
// the PE/COFF specification), independently of Synthetic.

type layout struct {
	x86     bool   // x86 setup header
	arm64   bool   // arm64 Image header
	pe      uint16 // PE machine; 0 = no PE header
	sub     uint16 // PE subsystem; 0 = EFI application
	body    int    // bytes after the headers
	version uint16 // x86 boot protocol; 0 = 2.15
}

func build(l layout) []byte {
	const head = 0x1000
	b := make([]byte, head+l.body)
	for i := head; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	le16 := binary.LittleEndian.PutUint16
	le32 := binary.LittleEndian.PutUint32
	if l.pe != 0 {
		copy(b, "MZ")
		const pe = 0x80
		le32(b[0x3C:], pe)
		copy(b[pe:], "PE\x00\x00")
		le16(b[pe+4:], l.pe)
		le16(b[pe+6:], 2)
		le16(b[pe+20:], 0xF0)
		opt := pe + 24
		le16(b[opt:], 0x20b)
		sub := l.sub
		if sub == 0 {
			sub = 10
		}
		le16(b[opt+68:], sub)
		sec := opt + 0xF0
		copy(b[sec:], ".setup")
		le32(b[sec+16:], head-0x200)
		le32(b[sec+20:], 0x200)
		copy(b[sec+40:], ".text")
		le32(b[sec+40+16:], uint32(l.body))
		le32(b[sec+40+20:], head)
	}
	if l.x86 {
		b[0x1F1] = head/512 - 1
		le32(b[0x1F4:], uint32(l.body/16))
		le16(b[0x1FE:], 0xAA55)
		copy(b[0x202:], "HdrS")
		v := l.version
		if v == 0 {
			v = 0x020F
		}
		le16(b[0x206:], v)
	}
	if l.arm64 {
		if l.pe == 0 {
			copy(b, "\x00\x00\x00\x14") // b #0x50, an Image without EFI stub
		}
		copy(b[0x38:], "ARM\x64")
	}
	return b
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestDetect(t *testing.T) {
	garbage := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1, 2}).Read(garbage)
	bz := build(layout{x86: true, pe: 0x8664, body: 64 << 10})
	arm := build(layout{arm64: true, pe: 0xaa64, body: 64 << 10})
	windows := build(layout{pe: 0x8664, sub: 3, body: 4096})

	tests := []struct {
		name string
		data []byte
		// want is Info.String(), or "" when Detect must refuse the file.
		want string
		// errHas are substrings of the error (or of the sd-boot / GRUB
		// errors when the image is detected).
		errHas []string
		grub   bool // Check(GRUB) passes
		sdboot bool // Check(SystemdBoot) passes
	}{
		{"x86 bzImage with EFI stub", bz, "x86 bzImage (boot protocol 2.15) with an EFI stub (PE x86-64)", nil, true, true},
		{"x86 bzImage without EFI stub", build(layout{x86: true, body: 8192, version: 0x020A}), "x86 bzImage (boot protocol 2.10) without an EFI stub", []string{"for systemd-boot", "needs an uncompressed PE/COFF"}, true, false},
		{"arm64 Image with EFI stub", arm, "arm64 Image with an EFI stub (PE arm64)", nil, true, true},
		{"arm64 Image without EFI stub", build(layout{arm64: true, body: 8192}), "arm64 Image without an EFI stub", nil, true, false},
		{"gzip arm64 Image (Ubuntu arm64)", gz(arm), "gzip-compressed arm64 Image", []string{"for systemd-boot"}, true, false},
		{"unified kernel image (PE only)", build(layout{pe: 0x8664, body: 8192}), "PE/COFF EFI application without a Linux boot header (PE x86-64)", []string{"for GRUB", "needs a Linux boot header"}, false, true},
		{"riscv64 PE", build(layout{pe: 0x5064, body: 8192}), "PE/COFF EFI application without a Linux boot header (PE riscv64)", nil, false, true},
		{"x86 bzImage with a damaged PE header", func() []byte { b := bytes.Clone(bz); copy(b[0x80:], "XX"); return b }(), "x86 bzImage (boot protocol 2.15) without an EFI stub", nil, true, false},
		{"Synthetic", Synthetic([]byte("kernel")), "x86 bzImage (boot protocol 2.15) with an EFI stub (PE x86-64)", nil, true, true},
		{"Synthetic, empty payload", Synthetic(nil), "x86 bzImage (boot protocol 2.15) with an EFI stub (PE x86-64)", nil, true, true},
		{"SyntheticARM64", SyntheticARM64([]byte("kernel")), "arm64 Image with an EFI stub (PE arm64)", nil, true, true},

		{"empty", nil, "", []string{"the file is empty", `"HdrS" at 0x202`}, false, false},
		{"placeholder text", []byte("kernel"), "", []string{"6 bytes starting with 6b 65 72 6e 65 6c", `"ARM\x64" at 0x38`, `"PE\0\0"`}, false, false},
		{"random bytes", garbage, "", []string{"1048576 bytes starting with"}, false, false},
		{"zeros", make([]byte, 1<<16), "", []string{"65536 bytes starting with 00 00"}, false, false},
		{"x86 header cut before HdrS", bz[:0x200], "", []string{"truncated", `section ".setup"`}, false, false},
		{"x86 body truncated", bz[:len(bz)-4096], "", []string{"truncated"}, false, false},
		{"x86 without PE, body truncated", build(layout{x86: true, body: 8192})[:0x1000+4096], "", []string{"setup header declares 12288 bytes, but the file has 8192"}, false, false},
		{"arm64 Image truncated", arm[:len(arm)-1], "", []string{`section ".text" ends at byte`}, false, false},
		{"MZ but no PE signature", []byte("MZ" + strings.Repeat("\x00", 0x100)), "", []string{`starts with "MZ" but is no PE/COFF EFI application`, `no "PE\0\0" at 0x0`}, false, false},
		{"Windows program", windows, "", []string{"subsystem 3, not an EFI application"}, false, false},
		{"gzip of garbage", gz(garbage[:4096]), "", []string{"gzip-compressed, and inside it", "not a kernel image"}, false, false},
		{"gzip truncated", func() []byte { z := gz(arm); return z[:len(z)/2] }(), "", []string{"gzip-compressed, but the stream is damaged or truncated"}, false, false},
		{"gzip of a unified kernel image", gz(build(layout{pe: 0x8664, body: 8192})), "", []string{"no bootloader starts that"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := Detect(tt.data)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("Detect accepted it as %s", info)
				}
				if !errors.Is(err, ErrNotKernel) {
					t.Errorf("error %v is not ErrNotKernel", err)
				}
				for _, s := range tt.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				for _, l := range []Loader{AnyLoader, GRUB, SystemdBoot} {
					if _, err := Check(tt.data, l); err == nil {
						t.Errorf("Check(%d) accepted it", l)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if got := info.String(); got != tt.want {
				t.Errorf("Detect = %q, want %q", got, tt.want)
			}
			if _, err := Check(tt.data, AnyLoader); err != nil {
				t.Errorf("Check(AnyLoader): %v", err)
			}
			var errs []string
			for _, c := range []struct {
				l    Loader
				ok   bool
				name string
			}{{GRUB, tt.grub, "GRUB"}, {SystemdBoot, tt.sdboot, "systemd-boot"}} {
				_, err := Check(tt.data, c.l)
				switch {
				case c.ok && err != nil:
					t.Errorf("Check(%s): %v", c.name, err)
				case !c.ok && err == nil:
					t.Errorf("Check(%s) accepted it", c.name)
				case err != nil:
					if !errors.Is(err, ErrNotKernel) {
						t.Errorf("Check(%s): %v is not ErrNotKernel", c.name, err)
					}
					errs = append(errs, err.Error())
				}
			}
			for _, s := range tt.errHas {
				if !strings.Contains(strings.Join(errs, "\n"), s) {
					t.Errorf("loader errors %q lack %q", errs, s)
				}
			}
		})
	}
}

func TestCheckArch(t *testing.T) {
	x86, _ := Detect(build(layout{x86: true, pe: 0x8664, body: 4096}))
	arm, _ := Detect(build(layout{arm64: true, body: 4096}))
	uki, _ := Detect(build(layout{pe: 0x5064, body: 4096}))
	for _, tt := range []struct {
		info Info
		arch string
		ok   bool
	}{
		{x86, "amd64", true}, {x86, "x86_64", true}, {x86, "arm64", false},
		{arm, "arm64", true}, {arm, "aarch64", true}, {arm, "amd64", false},
		{uki, "riscv64", true}, {uki, "amd64", false},
		{x86, "e2e", true}, // unknown names pass
	} {
		err := CheckArch(tt.info, tt.arch)
		if (err == nil) != tt.ok {
			t.Errorf("CheckArch(%s, %s) = %v, want ok=%v", tt.info, tt.arch, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "for "+tt.arch) {
			t.Errorf("error %q does not name the architecture", err)
		}
	}
}

// TestRealKernels checks the kernels this machine has: its own, and the
// Debian cloud kernel the e2e tests download into their cache.
func TestRealKernels(t *testing.T) {
	var files []string
	for _, g := range []string{"/boot/vmlinuz-*", filepath.Join(os.TempDir(), "sealift-e2e-cache", "kernel", "*", "boot", "vmlinuz-*")} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Skip("no kernel on this machine")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Log(err)
			continue
		}
		info, err := Check(data, AnyLoader)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		t.Logf("%s: %s", f, info)
		if info.Arch == "x86" {
			// Debian's x86 kernels carry the EFI stub: both loaders take them.
			for _, l := range []Loader{GRUB, SystemdBoot} {
				if _, err := Check(data, l); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
		}
	}
}
