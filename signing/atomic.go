package signing

import (
	"os"

	"sealift/internal/atomicfile"
)

// writeFileAtomic and syncDir are sealift's one crash-safe replacement
// (package atomicfile), under the names this package uses.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }
