// Package config reads sealift's node configuration (TOML). Loading is
// strict: unknown keys, bad values and unreadable files are errors naming
// the field, found when the config is read rather than when it is used.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"sealift/updater/health"
	"sealift/updater/rollout"
)

// DefaultPath is where a node keeps its config.
const DefaultPath = "/etc/sealift/config.toml"

// Config is the whole node configuration.
type Config struct {
	Source SourceConfig `toml:"source"`
	Trust  TrustConfig  `toml:"trust"`
	Node   NodeConfig   `toml:"node"`
	Update UpdateConfig `toml:"update"`
	// Health is checked when the config is loaded, so a bad check fails
	// now rather than at the next boot.
	Health health.Config `toml:"health"`
	// The agent's sections (agent.go).
	Agent    AgentConfig    `toml:"agent"`
	Download DownloadConfig `toml:"download"`
	Reboot   RebootConfig   `toml:"reboot"`
}

// SourceConfig says where releases come from.
type SourceConfig struct {
	// Repository is the registry repository, e.g. "registry.example.com/os/node".
	Repository string `toml:"repository"`
	// Mirrors hold the same repository content; tried in order after the
	// primary fails. TUF makes any mirror safe to use.
	Mirrors []string `toml:"mirrors"`
	// Layout is an OCI image layout directory to read instead of a
	// registry (removable media, air-gapped sites).
	Layout string `toml:"layout"`
	// Insecure allows plain HTTP to the registry.
	Insecure bool `toml:"insecure"`
	// CAFile is an extra PEM CA bundle for the registry's TLS.
	CAFile string `toml:"ca_file"`
	// Username and PasswordFile give basic auth; otherwise docker
	// config.json credentials are used, else anonymous access.
	Username     string   `toml:"username"`
	PasswordFile string   `toml:"password_file"`
	Timeout      Duration `toml:"timeout"`
	Retries      int      `toml:"retries"`
}

// TrustConfig is the TUF trust anchor and cache.
type TrustConfig struct {
	// Root is the initial trusted root.json shipped in the OS image.
	Root string `toml:"root"`
	// CacheDir keeps trusted metadata across runs (on STATE), which is
	// what makes rollback and freeze protection survive reboots.
	CacheDir string `toml:"cache_dir"`
}

// NodeConfig identifies which releases apply to this node.
type NodeConfig struct {
	Variant string `toml:"variant"`
	Arch    string `toml:"arch"`
	// Seed overrides the node's rollout seed (0..2047) kept in the
	// state; nil when not set. A low seed makes a canary.
	Seed *int `toml:"seed"`
}

// UpdateConfig tunes how updates are applied.
type UpdateConfig struct {
	// Tries is how many boots a new slot gets before falling back.
	Tries int `toml:"tries"`
}

// Duration is a time.Duration written as "30s", "5m".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back as a string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults returns the config used where the file is silent.
func Defaults() Config {
	c := Config{
		Source: SourceConfig{Timeout: Duration{30 * time.Second}, Retries: 4},
		Trust:  TrustConfig{Root: "/usr/share/sealift/root.json", CacheDir: "/var/lib/sealift/tuf"},
		Node:   NodeConfig{Arch: GoArchToOS(runtime.GOARCH)},
		Update: UpdateConfig{Tries: 3},
	}
	agentDefaults(&c)
	return c
}

// GoArchToOS maps Go's architecture names to the ones OS releases use.
func GoArchToOS(a string) string {
	switch a {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return a
}

// Load reads and validates a config file and its drop-ins: every *.toml
// in the directory named like the file without its extension plus ".d"
// (/etc/sealift/config.d for /etc/sealift/config.toml), in lexical
// order, each overriding the keys it sets. Relative paths are taken
// relative to the directory of the file that sets them.
func Load(path string) (*Config, error) {
	c := Defaults()
	files := []string{path}
	dropIns, err := filepath.Glob(filepath.Join(DropInDir(path), "*.toml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(dropIns)
	files = append(files, dropIns...)
	for _, f := range files {
		if err := c.decodeFile(f); err != nil {
			return nil, err
		}
	}
	if err := c.Validate(); err != nil {
		where := path
		if len(dropIns) > 0 {
			where += " (with " + strings.Join(dropIns, ", ") + ")"
		}
		return nil, fmt.Errorf("config %s: %w", where, err)
	}
	return &c, nil
}

// DropInDir is the drop-in directory of a config file.
func DropInDir(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".d"
}

// decodeFile overlays one TOML file on c.
func (c *Config) decodeFile(path string) error {
	paths := []*string{&c.Source.Layout, &c.Source.CAFile, &c.Source.PasswordFile, &c.Trust.Root, &c.Trust.CacheDir,
		&c.Agent.Socket, &c.Reboot.FleetLock.MachineID}
	before := make([]string, len(paths))
	for i, p := range paths {
		before[i] = *p
	}
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config %s: unknown key(s): %s", path, strings.Join(keys, ", "))
	}
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	for i, p := range paths {
		if *p != before[i] && *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	return nil
}

// Validate checks values and that the files the config names are readable.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	s := c.Source
	switch {
	case s.Repository == "" && s.Layout == "":
		bad("source.repository", "set a registry repository or source.layout")
	case s.Repository != "" && s.Layout != "":
		bad("source.layout", "set either source.repository or source.layout, not both")
	}
	if s.Layout != "" && len(s.Mirrors) > 0 {
		bad("source.mirrors", "mirrors apply to a registry repository, not a layout directory")
	}
	for i, r := range append([]string{s.Repository}, s.Mirrors...) {
		if r == "" && i == 0 {
			continue
		}
		field := "source.repository"
		if i > 0 {
			field = fmt.Sprintf("source.mirrors[%d]", i-1)
		}
		if strings.Contains(r, "://") {
			bad(field, "%q: give host/path without a scheme (use source.insecure for plain HTTP)", r)
		} else if !strings.Contains(r, "/") {
			bad(field, "%q: want registry-host/repository", r)
		}
	}
	if s.Retries < 0 || s.Retries > 20 {
		bad("source.retries", "%d out of range 0-20", s.Retries)
	}
	if s.Username != "" && s.PasswordFile == "" {
		bad("source.password_file", "required with source.username")
	}
	for field, p := range map[string]string{"source.ca_file": s.CAFile, "source.password_file": s.PasswordFile, "trust.root": c.Trust.Root} {
		if p == "" {
			continue
		}
		if _, err := os.ReadFile(p); err != nil {
			bad(field, "%v", err)
		}
	}
	if s.Layout != "" {
		if st, err := os.Stat(s.Layout); err != nil || !st.IsDir() {
			bad("source.layout", "%q is not a readable directory", s.Layout)
		}
	}
	if c.Trust.Root == "" {
		bad("trust.root", "required: the trusted root.json")
	}
	if c.Trust.CacheDir == "" {
		bad("trust.cache_dir", "required")
	}
	if c.Node.Variant == "" {
		bad("node.variant", "required (releases are published per variant)")
	}
	if c.Node.Arch == "" {
		bad("node.arch", "required")
	}
	if c.Node.Seed != nil && rollout.CheckSeed(*c.Node.Seed) != nil {
		bad("node.seed", "%d out of range 0-%d", *c.Node.Seed, rollout.Seeds-1)
	}
	if c.Update.Tries < 1 || c.Update.Tries > 15 {
		bad("update.tries", "%d out of range 1-15", c.Update.Tries)
	}
	if len(c.Health.Checks) > 0 || c.Health.Probation != "" || c.Health.Deadline != "" || c.Health.Interval != "" {
		if _, err := c.Health.Compile(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.validateAgent(bad)...)
	return errors.Join(errs...)
}

// Password reads the basic-auth password file, without its trailing newline.
func (s SourceConfig) Password() (string, error) {
	if s.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("source.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
