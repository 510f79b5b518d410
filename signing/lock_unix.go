//go:build unix

package signing

import (
	"os"
	"syscall"
)

// lockDir takes an exclusive advisory lock on dir/.lock so that two
// publisher processes (say a cron RefreshTimestamp and a release AddTarget)
// never both bump the same version from the same starting state.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(dir+"/.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
