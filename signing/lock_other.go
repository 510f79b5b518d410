//go:build !unix

package signing

// lockDir is a no-op where flock is unavailable: there, run one publisher
// process at a time.
func lockDir(dir string) (unlock func(), err error) { return func() {}, nil }
