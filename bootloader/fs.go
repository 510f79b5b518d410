package bootloader

import (
	"os"
	"path/filepath"
	"sort"

	"sealift/internal/atomicfile"
)

// FS is the small part of a filesystem the backends and boot files need on
// the ESP. Two implementations exist: DirFS for a mounted ESP (and tests),
// and the FAT32 reader/writer in package partitions for an unmounted one.
// Paths are slash-separated and relative to the ESP root.
type FS interface {
	ReadFile(name string) ([]byte, error)
	// WriteFile replaces name with data and makes it durable before returning.
	WriteFile(name string, data []byte) error
	// Rename moves oldname to newname, replacing newname if it exists.
	Rename(oldname, newname string) error
	// Remove deletes a file; a missing file is not an error.
	Remove(name string) error
	// ReadDir lists the names in dir; a missing dir yields no names.
	ReadDir(dir string) ([]string, error)
	MkdirAll(dir string) error
}

// DirFS is an FS rooted at a directory, for a mounted ESP.
type DirFS string

func (d DirFS) path(name string) string { return filepath.Join(string(d), filepath.FromSlash(name)) }

func (d DirFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(d.path(name)) }

// WriteFile writes a temp file, fsyncs it, renames it into place and fsyncs
// the directory, so a crash leaves either the old or the new file.
func (d DirFS) WriteFile(name string, data []byte) error {
	return atomicfile.WriteFile(d.path(name), data, 0o644)
}

func (d DirFS) Rename(oldname, newname string) error {
	if err := os.Rename(d.path(oldname), d.path(newname)); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(d.path(newname)))
}

func (d DirFS) Remove(name string) error {
	err := os.Remove(d.path(name))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(d.path(name)))
}

func (d DirFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(d.path(dir))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

func (d DirFS) MkdirAll(dir string) error { return os.MkdirAll(d.path(dir), 0o755) }
