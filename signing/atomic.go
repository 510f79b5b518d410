package signing

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeFileAtomic replaces path with data so that after a crash the file
// holds either the old or the new content, never a mix or nothing: write a
// temporary file in the same directory, fsync it, rename it over path, then
// fsync the directory so the rename itself is durable.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	// CreateTemp makes the file 0600, so a private key is never readable by
	// others, not even for a moment before the Chmod below.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes directory entry changes (create, rename, remove) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync %s: %w", dir, serr)
	}
	return cerr
}
