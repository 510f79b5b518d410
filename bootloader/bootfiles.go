package bootloader

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// ESP layout shared by every backend. Each slot's boot files live in their
// own directory, rewritten only while that slot is not bootable.
const (
	ESPDir          = "sealift"
	BackendFile     = ESPDir + "/backend"
	KernelName      = "vmlinuz"
	InitrdName      = "initrd.img"
	CmdlineName     = "cmdline"
	VersionName     = "version"
	GrubSnippetName = "grub.cfg"
)

// SlotDir is the ESP directory of a slot's boot files, e.g. "sealift/A".
func SlotDir(s Slot) string { return path.Join(ESPDir, string(s)) }

// BootFiles is what boots one slot.
type BootFiles struct {
	Kernel  []byte
	Initrd  []byte // optional
	Cmdline string
	Version string
}

// BootEntry is what a backend needs to render an entry for a slot; paths
// are absolute on the ESP ("/sealift/A/vmlinuz").
type BootEntry struct {
	Slot    Slot
	Version string
	Cmdline string
	Kernel  string
	Initrd  string // empty when the slot has no initrd
}

// WriteBootFiles writes a slot's kernel, initrd, command line and version to
// the ESP. The caller must have made the slot unbootable first.
func WriteBootFiles(f FS, s Slot, b BootFiles) error {
	if len(b.Kernel) == 0 {
		return errors.New("boot files: kernel is empty")
	}
	if strings.ContainsAny(b.Cmdline, "\n\r") {
		return errors.New("boot files: kernel command line must be one line")
	}
	if strings.ContainsAny(b.Version, "\n\r") || b.Version == "" {
		return fmt.Errorf("boot files: invalid version %q", b.Version)
	}
	dir := SlotDir(s)
	if err := f.MkdirAll(dir); err != nil {
		return fmt.Errorf("create %s on ESP: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{KernelName, b.Kernel},
		{CmdlineName, []byte(b.Cmdline + "\n")},
		{VersionName, []byte(b.Version + "\n")},
		{GrubSnippetName, []byte(grubSnippet(b.Cmdline, len(b.Initrd) > 0))},
	}
	if len(b.Initrd) > 0 {
		files = append(files, struct {
			name string
			data []byte
		}{InitrdName, b.Initrd})
	} else if err := f.Remove(path.Join(dir, InitrdName)); err != nil {
		return fmt.Errorf("remove stale initrd: %w", err)
	}
	for _, fl := range files {
		if err := f.WriteFile(path.Join(dir, fl.name), fl.data); err != nil {
			return fmt.Errorf("write %s/%s on ESP: %w", dir, fl.name, err)
		}
	}
	return nil
}

// ReadBootEntry reads back what WriteBootFiles wrote, without the kernel
// and initrd bytes. A slot that never had boot files gives fs.ErrNotExist.
func ReadBootEntry(f FS, s Slot) (BootEntry, error) {
	dir := SlotDir(s)
	cmd, err := f.ReadFile(path.Join(dir, CmdlineName))
	if err != nil {
		return BootEntry{}, err
	}
	ver, err := f.ReadFile(path.Join(dir, VersionName))
	if err != nil {
		return BootEntry{}, err
	}
	e := BootEntry{
		Slot:    s,
		Version: strings.TrimSpace(string(ver)),
		Cmdline: strings.TrimSpace(string(cmd)),
		Kernel:  "/" + path.Join(dir, KernelName),
	}
	if _, err := f.ReadFile(path.Join(dir, InitrdName)); err == nil {
		e.Initrd = "/" + path.Join(dir, InitrdName)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return BootEntry{}, err
	}
	return e, nil
}

// grubSnippet is sourced by the grub.cfg of GRUB-based backends to learn a
// slot's command line. GRUB's single quotes take everything literally, so
// only a single quote itself needs escaping.
func grubSnippet(cmdline string, initrd bool) string {
	q := "'" + strings.ReplaceAll(cmdline, "'", `'\''`) + "'"
	has := "0"
	if initrd {
		has = "1"
	}
	return "set sealift_cmdline=" + q + "\nset sealift_has_initrd=" + has + "\n"
}

// RecordBackend writes the backend name to the ESP at disk init.
func RecordBackend(f FS, name string) error {
	if err := f.MkdirAll(ESPDir); err != nil {
		return err
	}
	return f.WriteFile(BackendFile, []byte(name+"\n"))
}

// RecordedBackend reads the backend name written by RecordBackend.
func RecordedBackend(f FS) (string, error) {
	b, err := f.ReadFile(BackendFile)
	if err != nil {
		return "", fmt.Errorf("read boot backend from ESP (%s): %w", BackendFile, err)
	}
	return strings.TrimSpace(string(b)), nil
}
