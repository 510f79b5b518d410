package sdboot

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sealift/bootloader"
)

// newESP is a temp ESP with boot files for the given slots (the initrd only
// for A, so both entry shapes occur).
func newESP(t *testing.T, slots ...bootloader.Slot) bootloader.DirFS {
	t.Helper()
	esp := bootloader.DirFS(t.TempDir())
	for _, s := range slots {
		bf := bootloader.BootFiles{Kernel: []byte("kernel"), Cmdline: "root=/dev/disk/by-partlabel/ROOT-" + string(s) + " ro quiet", Version: "1.0." + strings.ToLower(string(s))}
		if s == bootloader.SlotA {
			bf.Initrd = []byte("initrd")
		}
		if err := bootloader.WriteBootFiles(esp, s, bf); err != nil {
			t.Fatal(err)
		}
	}
	return esp
}

// entryFiles lists loader/entries.
func entryFiles(t *testing.T, esp bootloader.FS) []string {
	t.Helper()
	names, err := esp.ReadDir(EntriesDir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// bootOnce is systemd-boot 252 at one boot, working on the directory as the
// firmware would: read every *.conf in loader/entries (not hidden, not
// auto-*), drop entries whose linux file is missing, sort, take the first,
// and rename it to its bumped counter before "booting". It returns the
// selected file ("" when there is nothing to boot).
func bootOnce(t *testing.T, esp bootloader.DirFS) string {
	t.Helper()
	chosen, ok := selected(t, esp)
	if !ok {
		return ""
	}
	if next := chosen.next(); next != chosen.file {
		if err := esp.Rename(path.Join(EntriesDir, chosen.file), path.Join(EntriesDir, next)); err != nil {
			t.Fatal(err)
		}
	}
	return chosen.file
}

// selected is the entry systemd-boot would boot, without booting it.
func selected(t *testing.T, esp bootloader.DirFS) (sdEntry, bool) {
	t.Helper()
	var es []sdEntry
	for _, name := range entryFiles(t, esp) {
		if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "auto-") || !strings.HasSuffix(strings.ToLower(name), ".conf") {
			continue
		}
		data, err := esp.ReadFile(path.Join(EntriesDir, name))
		if err != nil {
			t.Fatal(err)
		}
		linux := ""
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok && k == "linux" {
				linux = strings.TrimSpace(v)
			}
		}
		if linux == "" {
			continue
		}
		if _, err := esp.ReadFile(strings.TrimPrefix(linux, "/")); err != nil {
			continue
		}
		es = append(es, parseSDEntry(name))
	}
	if len(es) == 0 {
		return sdEntry{}, false
	}
	sort.SliceStable(es, func(i, j int) bool { return sdCompare(es[i], es[j]) < 0 })
	return es[0], true
}

// slotOf is the slot a sealift entry file boots.
func slotOf(t *testing.T, file string) bootloader.Slot {
	t.Helper()
	if file == "" {
		return ""
	}
	n, err := ParseEntryName(file)
	if err != nil {
		t.Fatal(err)
	}
	return n.Slot
}

// copyESP copies a whole ESP directory into a new temp dir.
func copyESP(t *testing.T, src bootloader.DirFS) bootloader.DirFS {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(string(src), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(string(src), p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return bootloader.DirFS(dst)
}

var errPowerCut = errors.New("power cut")

// cutFS passes the first n mutating operations through and fails the rest,
// as if power failed after n durable steps; n < 0 never fails. It records
// what it let through.
type cutFS struct {
	bootloader.FS
	n   int
	ops []string
}

func (c *cutFS) step(desc string) error {
	if c.n == 0 {
		return errPowerCut
	}
	c.n--
	c.ops = append(c.ops, desc)
	return nil
}

func (c *cutFS) WriteFile(name string, data []byte) error {
	if err := c.step("write " + path.Base(name)); err != nil {
		return err
	}
	return c.FS.WriteFile(name, data)
}

func (c *cutFS) Rename(oldname, newname string) error {
	if err := c.step("rename " + path.Base(oldname) + " -> " + path.Base(newname)); err != nil {
		return err
	}
	return c.FS.Rename(oldname, newname)
}

func (c *cutFS) Remove(name string) error {
	if err := c.step("remove " + path.Base(name)); err != nil {
		return err
	}
	return c.FS.Remove(name)
}
