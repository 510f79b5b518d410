// Package kernelimage recognises the kernel image formats a sealift slot
// can boot, so that a file no bootloader would start is refused when a
// release is built or installed, not found out at the next boot.
//
// Recognised, by the headers the bootloaders themselves check:
//
//   - x86 bzImage: boot flag 0xAA55 at 0x1FE and the setup header magic
//     "HdrS" at 0x202 (what GRUB's linux command checks: "invalid magic
//     number" otherwise). Its size must cover the setup sectors and the
//     protected-mode part the header declares (syssize), so a truncated
//     copy is refused too.
//   - arm64 Image: the magic "ARM\x64" at 0x38.
//   - PE/COFF EFI application: "MZ", the offset of "PE\0\0" at 0x3C, an
//     optional header with subsystem EFI application, and every section's
//     data inside the file. This is the EFI stub that x86 and arm64 kernels
//     carry in front of the headers above (CONFIG_EFI_STUB), and the form of
//     a unified kernel image; the firmware's LoadImage, which systemd-boot
//     uses, starts nothing else.
//   - any of the Linux headers above inside a gzip stream (Ubuntu's arm64
//     vmlinuz): GRUB decompresses it (gzio); the firmware cannot.
//
// Which of these a bootloader accepts is Check's business: GRUB's linux
// command needs a Linux header, systemd-boot needs PE/COFF.
package kernelimage

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrNotKernel is the error class of everything Detect and Check refuse.
var ErrNotKernel = errors.New("not a kernel image")

// Expected says what Detect looks for, for error messages.
const Expected = `an x86 bzImage (boot flag 0xAA55 at 0x1FE and "HdrS" at 0x202), ` +
	`an arm64 Image ("ARM\x64" at 0x38) or a PE/COFF EFI application ` +
	`("MZ", and "PE\0\0" at the offset stored at 0x3C), possibly gzip-compressed`

// Info is what Detect found.
type Info struct {
	// Format is the Linux boot header: "x86 bzImage", "arm64 Image", or ""
	// for a PE/COFF file without one (a unified kernel image).
	Format string
	// Arch is the architecture the headers name: "x86", "arm64", or the PE
	// machine ("riscv64", "0x1234") for a PE file without a Linux header.
	Arch string
	// Protocol is the x86 boot protocol version, e.g. "2.15".
	Protocol string
	// EFI is true for a PE/COFF EFI application the firmware can start.
	EFI bool
	// PEMachine names the PE machine when EFI: "x86-64", "arm64", ...
	PEMachine string
	// Compressed is "gzip" when the headers were found after decompressing.
	Compressed string
}

// Linux reports whether the image has a Linux boot header, which GRUB's
// linux command needs.
func (i Info) Linux() bool { return i.Format != "" }

// String describes the image for logs and errors, e.g. "x86 bzImage (boot
// protocol 2.15) with an EFI stub (PE32+ x86-64)".
func (i Info) String() string {
	var s string
	switch {
	case i.Format != "" && i.Protocol != "":
		s = fmt.Sprintf("%s (boot protocol %s)", i.Format, i.Protocol)
	case i.Format != "":
		s = i.Format
	default:
		s = "PE/COFF EFI application without a Linux boot header"
	}
	switch {
	case i.Compressed != "":
		// Whatever is inside, the firmware cannot start it.
	case i.Format != "" && i.EFI:
		s += fmt.Sprintf(" with an EFI stub (PE %s)", i.PEMachine)
	case i.Format == "" && i.EFI:
		s += fmt.Sprintf(" (PE %s)", i.PEMachine)
	case i.Format != "":
		s += " without an EFI stub"
	}
	if i.Compressed != "" {
		s = i.Compressed + "-compressed " + s
	}
	return s
}

// headLen is how much of an image the headers are looked for in.
const headLen = 64 << 10

// maxGunzip bounds what a gzip-compressed kernel may expand to.
const maxGunzip = 1 << 30

// Detect recognises a kernel image. The error, of class ErrNotKernel, says
// what was found and what was expected; it does not name the file, which
// the caller knows.
func Detect(data []byte) (Info, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		return detectGzip(data)
	}
	head := data
	if len(head) > headLen {
		head = head[:headLen]
	}
	return detect(head, int64(len(data)))
}

func detectGzip(data []byte) (Info, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return Info{}, fmt.Errorf("%w: gzip-compressed, but the gzip header is damaged: %v", ErrNotKernel, err)
	}
	zr.Multistream(false)
	var head bytes.Buffer
	n, err := io.Copy(&prefixWriter{buf: &head, max: headLen}, io.LimitReader(zr, maxGunzip+1))
	if err != nil {
		// A short stream, a bad checksum: GRUB's gzio would fail too.
		return Info{}, fmt.Errorf("%w: gzip-compressed, but the stream is damaged or truncated after %d bytes: %v", ErrNotKernel, n, err)
	}
	if n > maxGunzip {
		return Info{}, fmt.Errorf("%w: gzip-compressed and expands to more than %d bytes", ErrNotKernel, maxGunzip)
	}
	info, err := detect(head.Bytes(), n)
	if err != nil {
		return Info{}, fmt.Errorf("gzip-compressed, and inside it: %w", err)
	}
	info.Compressed = "gzip"
	// The firmware cannot start a compressed file, whatever it holds.
	info.EFI, info.PEMachine = false, ""
	if info.Format == "" {
		return Info{}, fmt.Errorf("%w: a gzip-compressed PE/COFF file without a Linux boot header: no bootloader starts that", ErrNotKernel)
	}
	return info, nil
}

// prefixWriter keeps the first max bytes written and counts the rest.
type prefixWriter struct {
	buf *bytes.Buffer
	max int
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// detect looks at the first bytes of an image of size bytes.
func detect(head []byte, size int64) (Info, error) {
	if size == 0 {
		return Info{}, fmt.Errorf("%w: the file is empty; want %s", ErrNotKernel, Expected)
	}
	var info Info
	x86, err := detectX86(head, size, &info)
	if err != nil {
		return Info{}, err
	}
	if !x86 {
		detectARM64(head, &info)
	}
	efi, peErr := detectPE(head, size, &info)
	switch {
	case info.Format != "" && peErr != nil && isTruncated(peErr):
		// The Linux header is fine, but the EFI stub's sections run past
		// the end: the file was cut short.
		return Info{}, peErr
	case info.Format != "":
		// A Linux kernel; a damaged PE header only loses the EFI stub.
		return info, nil
	case efi:
		return info, nil
	case peErr != nil:
		return Info{}, peErr
	}
	return Info{}, fmt.Errorf("%w: %s; want %s", ErrNotKernel, describe(head, size), Expected)
}

// errTruncated marks a header that describes more data than the file has.
var errTruncated = errors.New("truncated")

func isTruncated(err error) bool { return errors.Is(err, errTruncated) }

// describe says what the start of a file that is no kernel looks like.
func describe(head []byte, size int64) string {
	n := min(len(head), 8)
	return fmt.Sprintf("%d bytes starting with % x", size, head[:n])
}

// x86 setup header (Documentation/arch/x86/boot.rst).
const (
	x86SetupSects = 0x1F1
	x86SysSize    = 0x1F4
	x86BootFlag   = 0x1FE
	x86Header     = 0x202
	x86Version    = 0x206
	x86HeaderEnd  = 0x208
)

func detectX86(head []byte, size int64, info *Info) (bool, error) {
	if len(head) < x86HeaderEnd || binary.LittleEndian.Uint16(head[x86BootFlag:]) != 0xAA55 || string(head[x86Header:x86Header+4]) != "HdrS" {
		return false, nil
	}
	ver := binary.LittleEndian.Uint16(head[x86Version:])
	info.Format, info.Arch = "x86 bzImage", "x86"
	info.Protocol = fmt.Sprintf("%d.%02d", ver>>8, ver&0xff)
	if ver >= 0x0204 {
		// syssize is 32 bits from protocol 2.04 on: the protected-mode
		// part in 16-byte paragraphs, after 1 + setup_sects sectors.
		sects := int64(head[x86SetupSects])
		if sects == 0 {
			sects = 4
		}
		want := (sects+1)*512 + int64(binary.LittleEndian.Uint32(head[x86SysSize:]))*16
		// The build tool rounds syssize up to a paragraph.
		if size+15 < want {
			return false, fmt.Errorf("%w: %w: an x86 bzImage whose setup header declares %d bytes, but the file has %d", ErrNotKernel, errTruncated, want, size)
		}
	}
	return true, nil
}

// arm64 Image header (Documentation/arch/arm64/booting.rst).
const arm64Magic = 0x38

func detectARM64(head []byte, info *Info) {
	if len(head) >= arm64Magic+4 && string(head[arm64Magic:arm64Magic+4]) == "ARM\x64" {
		info.Format, info.Arch = "arm64 Image", "arm64"
	}
}

var peMachines = map[uint16]string{
	0x8664: "x86-64",
	0x014c: "i386",
	0xaa64: "arm64",
	0x01c2: "arm",
	0x01c4: "arm",
	0x5064: "riscv64",
	0x6264: "loongarch64",
}

// peArch maps a PE machine name to Info.Arch.
func peArch(m string) string {
	switch m {
	case "x86-64", "i386":
		return "x86"
	}
	return m
}

const efiApplication = 10 // IMAGE_SUBSYSTEM_EFI_APPLICATION

// detectPE checks the PE/COFF headers. It reports false without an error
// when the file does not start with "MZ"; an "MZ" file whose PE headers are
// wrong gives the error a caller reports when nothing else matched.
func detectPE(head []byte, size int64, info *Info) (bool, error) {
	if len(head) < 0x40 || head[0] != 'M' || head[1] != 'Z' {
		return false, nil
	}
	bad := func(format string, args ...any) (bool, error) {
		return false, fmt.Errorf("%w: starts with \"MZ\" but is no PE/COFF EFI application: %s; want %s", ErrNotKernel, fmt.Sprintf(format, args...), Expected)
	}
	off := int64(binary.LittleEndian.Uint32(head[0x3C:]))
	if off+24 > int64(len(head)) {
		return bad("the PE header offset 0x%x at 0x3C is beyond the first %d bytes", off, len(head))
	}
	if string(head[off:off+4]) != "PE\x00\x00" {
		return bad("no \"PE\\0\\0\" at 0x%x", off)
	}
	machine := binary.LittleEndian.Uint16(head[off+4:])
	nsec := int64(binary.LittleEndian.Uint16(head[off+6:]))
	optSize := int64(binary.LittleEndian.Uint16(head[off+20:]))
	opt := off + 24
	if optSize < 70 || opt+optSize > int64(len(head)) {
		return bad("its optional header (%d bytes) is missing or too short", optSize)
	}
	if m := binary.LittleEndian.Uint16(head[opt:]); m != 0x10b && m != 0x20b {
		return bad("optional header magic 0x%x is neither PE32 nor PE32+", m)
	}
	if sub := binary.LittleEndian.Uint16(head[opt+68:]); sub != efiApplication {
		return bad("subsystem %d, not an EFI application (%d)", sub, efiApplication)
	}
	secs := opt + optSize
	if secs+nsec*40 > int64(len(head)) {
		return bad("its %d section headers run past the first %d bytes", nsec, len(head))
	}
	for i := int64(0); i < nsec; i++ {
		s := head[secs+i*40 : secs+(i+1)*40]
		rawSize := int64(binary.LittleEndian.Uint32(s[16:]))
		rawPtr := int64(binary.LittleEndian.Uint32(s[20:]))
		if rawSize > 0 && rawPtr+rawSize > size {
			name := string(bytes.TrimRight(s[:8], "\x00"))
			return false, fmt.Errorf("%w: %w: PE/COFF section %q ends at byte %d, but the file has %d", ErrNotKernel, errTruncated, name, rawPtr+rawSize, size)
		}
	}
	name, ok := peMachines[machine]
	if !ok {
		name = fmt.Sprintf("machine 0x%04x", machine)
	}
	info.EFI, info.PEMachine = true, name
	if info.Arch == "" {
		info.Arch = peArch(name)
	}
	return true, nil
}

// Loader is what starts the kernel.
type Loader int

const (
	// AnyLoader accepts every recognised image.
	AnyLoader Loader = iota
	// GRUB's linux command needs a Linux boot header; it decompresses gzip.
	GRUB
	// SystemdBoot starts a kernel with the firmware's LoadImage, which
	// needs an uncompressed PE/COFF EFI application.
	SystemdBoot
)

// Check is Detect plus what the loader needs.
func Check(data []byte, l Loader) (Info, error) {
	info, err := Detect(data)
	if err != nil {
		return info, err
	}
	switch {
	case l == GRUB && !info.Linux():
		return info, fmt.Errorf("%w for GRUB: %s; GRUB's linux command needs a Linux boot header (an x86 bzImage or an arm64 Image)", ErrNotKernel, info)
	case l == SystemdBoot && !info.EFI:
		return info, fmt.Errorf("%w for systemd-boot: %s; systemd-boot starts kernels through the firmware, which needs an uncompressed PE/COFF EFI application (a kernel built with its EFI stub, or a unified kernel image)", ErrNotKernel, info)
	}
	return info, nil
}

// archFamilies maps release architecture names to Info.Arch.
var archFamilies = map[string]string{
	"amd64": "x86", "x86_64": "x86", "386": "x86", "i386": "x86", "i686": "x86",
	"arm64": "arm64", "aarch64": "arm64",
	"riscv64": "riscv64",
}

// CheckArch reports an error when the image is for another architecture
// than arch (a release's, e.g. "amd64" or "aarch64"). Unknown names pass.
func CheckArch(info Info, arch string) error {
	want, ok := archFamilies[arch]
	if !ok || info.Arch == "" || info.Arch == want {
		return nil
	}
	return fmt.Errorf("%w for %s: %s, which is for %s", ErrNotKernel, arch, info, info.Arch)
}
