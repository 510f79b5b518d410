package partitions

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"sealift/bootloader"
)

// ESPFS returns the ESP's filesystem.
//
// When the ESP is mounted (on a booted node, usually at /boot or /efi) the
// files are accessed through the mount, as bootloader.DirFS: writing the
// partition under a mounted filesystem would corrupt it. Otherwise the
// FAT32 filesystem on the partition is read and written directly. Each
// call of the returned FS opens the partition, works and closes it again,
// so nothing is cached between calls.
func (d *Disk) ESPFS() (bootloader.FS, error) {
	if d.f == nil {
		return nil, fmt.Errorf("disk %s: closed", d.path)
	}
	mp, err := d.espMountPoint()
	if err != nil {
		return nil, err
	}
	if mp != "" {
		return bootloader.DirFS(mp), nil
	}
	f := &espFS{d: d}
	// Fail now, not at the first use, when the ESP holds no FAT32.
	if err := f.do(false, func(*fat32) error { return nil }); err != nil {
		return nil, err
	}
	return f, nil
}

// espMountPoint returns where the ESP is mounted, "" when it is not. A
// mount of only a subdirectory of the ESP cannot serve as its root, so it
// is reported as ErrMounted.
func (d *Disk) espMountPoint() (string, error) {
	esp := d.ESP()
	var devs []blockDev
	if d.blockDev != nil {
		kparts, err := d.host.partitionsOf(d.blockDev.name)
		if err != nil {
			return "", fmt.Errorf("disk %s: %w", d.path, err)
		}
		if kp, ok := kparts[esp.Index]; ok {
			devs = append(devs, kp.blockDev)
		}
	} else {
		fi, err := d.f.Stat()
		if err != nil {
			return "", err
		}
		for _, l := range d.host.loopsBacking(fi) {
			switch {
			case l.offset == esp.Start:
				devs = append(devs, l.blockDev)
			case l.offset == 0:
				if kparts, err := d.host.partitionsOf(l.name); err == nil {
					if kp, ok := kparts[esp.Index]; ok && kp.start == esp.Start {
						devs = append(devs, kp.blockDev)
					}
				}
			}
		}
	}
	if len(devs) == 0 {
		return "", nil
	}
	ms, err := d.host.mounts()
	if err != nil {
		return "", err
	}
	// systemd mounts the ESP on demand (an autofs at /efi or /boot): look
	// into each automount point so a pending mount happens now, rather
	// than in the middle of our writes to the raw partition.
	triggered := false
	for _, m := range ms {
		if m.fsType == "autofs" {
			os.Stat(filepath.Join(m.mountPoint, "."))
			triggered = true
		}
	}
	if triggered {
		if ms, err = d.host.mounts(); err != nil {
			return "", err
		}
	}
	var sub string
	for _, m := range ms {
		for _, dv := range devs {
			if m.dev != dv.dev {
				continue
			}
			if m.root == "/" {
				return m.mountPoint, nil
			}
			sub = m.mountPoint
		}
	}
	if sub != "" {
		return "", fmt.Errorf("disk %s: the ESP is mounted only in part (at %s): %w", d.path, sub, ErrMounted)
	}
	return "", nil
}

// espFS is bootloader.FS on an unmounted ESP.
type espFS struct{ d *Disk }

// do opens the ESP, loads the filesystem, runs fn and, for a change,
// makes it durable before closing.
func (e *espFS) do(write bool, fn func(*fat32) error) error {
	d := e.d
	if d.f == nil {
		return fmt.Errorf("disk %s: closed", d.path)
	}
	if write && !d.writable {
		return fmt.Errorf("disk %s: write ESP: %w", d.path, ErrReadOnly)
	}
	esp := d.ESP()
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	name, base := d.path, esp.Start
	if d.blockDev != nil {
		node, _, err := d.partitionNode(esp)
		if err != nil {
			return err
		}
		name, base = node, 0
	}
	f, err := os.OpenFile(name, flag, 0)
	if err != nil {
		return fmt.Errorf("open ESP: %w", err)
	}
	defer f.Close()
	// Readers do not take the disk lock (status must answer while an
	// update runs), so the FAT is locked for each operation on its own:
	// a reader never sees a half-done change of the FAT, the directories
	// and the clusters of a file.
	if err := lockRange(f, write, base, esp.Size); err != nil {
		return fmt.Errorf("disk %s: lock the ESP: %w", d.path, err)
	}
	v, err := loadFAT32(region{f: f, base: base, size: esp.Size})
	if err != nil {
		return fmt.Errorf("disk %s: %w", d.path, err)
	}
	if err := fn(v); err != nil {
		return err
	}
	if write {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync ESP: %w", err)
		}
	}
	return nil
}

func (e *espFS) ReadFile(name string) ([]byte, error) {
	var out []byte
	err := e.do(false, func(v *fat32) error {
		var err error
		out, err = v.readFile(name)
		return err
	})
	return out, err
}

// WriteFile writes the data under a temporary name next to the target,
// then renames it over the target, so a crash leaves the old file or the
// new one (and at worst a stray temporary file or lost clusters that fsck
// reclaims).
func (e *espFS) WriteFile(name string, data []byte) error {
	return e.do(true, func(v *fat32) error { return v.writeFileAtomic(name, data) })
}

func (e *espFS) Rename(oldname, newname string) error {
	return e.do(true, func(v *fat32) error { return v.rename(oldname, newname) })
}

func (e *espFS) Remove(name string) error {
	return e.do(true, func(v *fat32) error { return v.remove(name) })
}

func (e *espFS) ReadDir(dir string) ([]string, error) {
	var out []string
	err := e.do(false, func(v *fat32) error {
		var err error
		out, err = v.readDirNames(dir)
		if errors.Is(err, iofs.ErrNotExist) {
			out, err = nil, nil
		}
		return err
	})
	return out, err
}

func (e *espFS) MkdirAll(dir string) error {
	return e.do(true, func(v *fat32) error { return v.mkdirAll(dir) })
}

// espLockWait bounds the wait for another process's ESP operation, which
// takes milliseconds; a holder stuck longer is reported, not waited for.
const espLockWait = 30 * time.Second

// lockRange takes an open-file-description lock (fcntl F_OFD_SETLK) on
// [start, start+size) of f: shared to read, exclusive to write. It is
// released when f is closed. OFD locks belong to the open file, not the
// process, so two opens in one process exclude each other as two
// processes do; they are independent of the flock that is the disk lock.
func lockRange(f *os.File, write bool, start, size int64) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: start, Len: size}
	if write {
		lk.Type = unix.F_WRLCK
	}
	deadline := time.Now().Add(espLockWait)
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another process has held it for %s: %w", espLockWait, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
