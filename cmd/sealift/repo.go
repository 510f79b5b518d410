package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"sealift/signing"
)

func init() {
	register(command{"repo init", "create a TUF repository (keys and signed metadata) for releases", cmdRepoInit})
	register(command{"repo timestamp", "re-sign the timestamp (and snapshot when due) before they expire", cmdRepoTimestamp})
	register(command{"repo rotate", "replace the keys of a role (root, targets, snapshot, timestamp)", cmdRepoRotate})
	register(command{"repo status", "show the repository's targets and metadata expiry", cmdRepoStatus})
}

// roleValues parses repeated "role=value" flags.
func roleValues(flag string, vals []string, parse func(string) (any, error)) (map[signing.Role]any, error) {
	out := map[signing.Role]any{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return nil, usageError{fmt.Sprintf("--%s %q: want ROLE=VALUE", flag, v)}
		}
		role := signing.Role(k)
		switch role {
		case signing.RoleRoot, signing.RoleTargets, signing.RoleSnapshot, signing.RoleTimestamp:
		default:
			return nil, usageError{fmt.Sprintf("--%s %q: unknown role %q (root, targets, snapshot, timestamp)", flag, v, k)}
		}
		p, err := parse(val)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--%s %q: %v", flag, v, err)}
		}
		out[role] = p
	}
	return out, nil
}

func parseCount(s string) (any, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 32 {
		return nil, fmt.Errorf("want a number 1-32")
	}
	return n, nil
}

// parseLifetime accepts Go durations plus days ("90d").
func parseLifetime(s string) (any, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("want e.g. 90d, 12h")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Minute {
		return nil, fmt.Errorf("want e.g. 90d, 12h (at least 1m)")
	}
	return d, nil
}

func cmdRepoInit(g *globals, args []string) error {
	fs := g.flagSet("repo init", "repo init DIR [--threshold ROLE=N] [--keys ROLE=N] [--expiry ROLE=DURATION]", false)
	thr := fs.StringSlice("threshold", nil, "signatures required, per role (e.g. root=2); default 1")
	keys := fs.StringSlice("keys", nil, "keys generated, per role (e.g. root=3); default 1, at least the threshold")
	exp := fs.StringSlice("expiry", nil, "metadata lifetime per role (e.g. timestamp=1d); defaults root=365d targets=90d snapshot=7d timestamp=1d")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"repo init takes exactly one DIR"}
	}
	o := signing.InitOptions{Thresholds: map[signing.Role]int{}, KeysPerRole: map[signing.Role]int{}, Expiry: map[signing.Role]time.Duration{}}
	for _, x := range []struct {
		flag string
		vals []string
		fill func(signing.Role, any)
		p    func(string) (any, error)
	}{
		{"threshold", *thr, func(r signing.Role, v any) { o.Thresholds[r] = v.(int) }, parseCount},
		{"keys", *keys, func(r signing.Role, v any) { o.KeysPerRole[r] = v.(int) }, parseCount},
		{"expiry", *exp, func(r signing.Role, v any) { o.Expiry[r] = v.(time.Duration) }, parseLifetime},
	} {
		m, err := roleValues(x.flag, x.vals, x.p)
		if err != nil {
			return err
		}
		for r, v := range m {
			x.fill(r, v)
		}
	}
	repo, err := signing.InitRepo(fs.Arg(0), o)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "created TUF repository in %s\n", repo.Dir())
	fmt.Fprintf(g.stdout, "trusted root for the OS image: %s\n", repo.TrustedRootPath())
	fmt.Fprintln(g.stdout, "keep keys/root offline; the timestamp must be re-signed before it expires (sealift repo timestamp)")
	return nil
}

func cmdRepoTimestamp(g *globals, args []string) error {
	fs := g.flagSet("repo timestamp", "repo timestamp DIR [publish flags]", false)
	pub := publishFlags(fs)
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"repo timestamp takes exactly one DIR"}
	}
	repo, err := signing.OpenRepo(fs.Arg(0), nil)
	if err != nil {
		return err
	}
	if err := repo.RefreshTimestamp(); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "timestamp re-signed")
	return pub.pushMetadata(g, repo)
}

func cmdRepoRotate(g *globals, args []string) error {
	fs := g.flagSet("repo rotate", "repo rotate DIR --role ROLE [--keys N] [--threshold N] [publish flags]", false)
	role := fs.String("role", "", "role whose keys to replace: root, targets, snapshot or timestamp")
	n := fs.Int("keys", 1, "number of new keys")
	thr := fs.Int("threshold", 1, "signatures required with the new keys")
	pub := publishFlags(fs)
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *role == "" {
		return usageError{"repo rotate takes DIR and --role"}
	}
	repo, err := signing.OpenRepo(fs.Arg(0), nil)
	if err != nil {
		return err
	}
	if err := repo.RotateKeys(signing.Role(*role), *n, *thr); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "rotated %s keys (%d keys, threshold %d); new trusted root: %s\n", *role, *n, *thr, repo.TrustedRootPath())
	return pub.pushMetadata(g, repo)
}

func cmdRepoStatus(g *globals, args []string) error {
	fs := g.flagSet("repo status", "repo status DIR", false)
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"repo status takes exactly one DIR"}
	}
	repo, err := signing.OpenRepo(fs.Arg(0), nil)
	if err != nil {
		return err
	}
	ts, err := repo.Targets()
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "repository %s, trusted root %s\n", repo.Dir(), repo.TrustedRootPath())
	for _, name := range sortedKeys(ts) {
		t := ts[name]
		fmt.Fprintf(g.stdout, "  %s  %d bytes  sha256:%s  %s\n", name, t.Length, t.SHA256, t.Custom)
	}
	return nil
}

// publishFlags are the flags of commands that push TUF metadata.
type publishOpts struct {
	fs *pflag.FlagSet
	registryFlags
}

func publishFlags(fs *pflag.FlagSet) *publishOpts {
	p := &publishOpts{fs: fs}
	p.registryFlags.add(fs, "push the metadata to this registry repository (or OCI layout with --layout)")
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
