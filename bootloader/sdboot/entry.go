package sdboot

import (
	"fmt"
	"strings"

	"sealift/bootloader"
)

// ESP paths of this backend.
const (
	EntriesDir = "loader/entries"
	LoaderConf = "loader/loader.conf"
)

// LoaderConfig is loader/loader.conf. There is no "default" line on
// purpose: the entry order (generation, then boot counting) is the whole
// selection rule. "editor no" because the command line carries the
// verity root hash; editing it at the console would bypass verification.
const LoaderConfig = `# Written by sealift. No "default": systemd-boot picks the entry that sorts
# highest, which sealift controls through the entry names.
timeout 0
editor no
`

// RenderEntry renders the Boot Loader Specification entry for a slot's
// boot files. There is no sort-key line on purpose: with one, systemd-boot
// would order by the version field and could prefer an older slot over the
// one sealift raised.
func RenderEntry(e bootloader.BootEntry) (string, error) {
	if !e.Slot.Valid() {
		return "", fmt.Errorf("sdboot: invalid slot %q", e.Slot)
	}
	for _, f := range []struct{ name, v string }{
		{"version", e.Version}, {"command line", e.Cmdline}, {"kernel path", e.Kernel}, {"initrd path", e.Initrd},
	} {
		if strings.ContainsAny(f.v, "\r\n") {
			return "", fmt.Errorf("sdboot: slot %s: %s must be one line", e.Slot, f.name)
		}
	}
	if e.Kernel == "" {
		return "", fmt.Errorf("sdboot: slot %s: no kernel path", e.Slot)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "title sealift %s (slot %s)\n", e.Version, e.Slot)
	if e.Version != "" {
		fmt.Fprintf(&b, "version %s\n", e.Version)
	}
	fmt.Fprintf(&b, "linux %s\n", e.Kernel)
	if e.Initrd != "" {
		fmt.Fprintf(&b, "initrd %s\n", e.Initrd)
	}
	opts := strings.TrimSpace(e.Cmdline + " sealift.slot=" + string(e.Slot))
	fmt.Fprintf(&b, "options %s\n", opts)
	return b.String(), nil
}
