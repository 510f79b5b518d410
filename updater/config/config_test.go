package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadGolden(t *testing.T) {
	c, err := Load("../../testdata/config/node.toml")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("../../testdata/config")
	if c.Source.Repository != "127.0.0.1:5000/os/node" || len(c.Source.Mirrors) != 1 || !c.Source.Insecure ||
		c.Source.Timeout.Duration != 10*time.Second || c.Source.Retries != 3 ||
		c.Trust.Root != filepath.Join(abs, "root.json") || c.Trust.CacheDir != filepath.Join(abs, "tuf-cache") ||
		c.Node.Variant != "k8s-1.31" || c.Update.Tries != 2 {
		t.Fatalf("%+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	base := `
[source]
repository = "127.0.0.1:5000/os/node"
[trust]
root = "root.json"
[node]
variant = "v"
`
	cases := []struct {
		name, content, want string
	}{
		{"valid", base, ""},
		{"unknown key", base + "[update]\nfrobs = 1\n", "unknown key(s): update.frobs"},
		{"unknown section", base + "[agent]\nx = 1\n", "unknown key"},
		{"not toml", "[source\n", "config"},
		{"no source", "[trust]\nroot = \"root.json\"\n[node]\nvariant = \"v\"\n", "source.repository"},
		{"both sources", base + "[source]\n", "source"},
		{"scheme in repository", strings.Replace(base, `"127.0.0.1:5000/os/node"`, `"http://127.0.0.1:5000/os/node"`, 1), "without a scheme"},
		{"bad mirror", strings.Replace(base, "[trust]", "mirrors = [\"nohost\"]\n[trust]", 1), "source.mirrors[0]"},
		{"bad duration", strings.Replace(base, "[trust]", "timeout = \"soon\"\n[trust]", 1), "timeout"},
		{"tries out of range", base + "[update]\ntries = 16\n", "update.tries"},
		{"missing variant", strings.Replace(base, "variant = \"v\"", "", 1), "node.variant"},
		{"unreadable root", strings.Replace(base, "root.json", "missing.json", 1), "trust.root"},
		{"username without password", strings.Replace(base, "[trust]", "username = \"u\"\n[trust]", 1), "source.password_file"},
		{"health check of unknown type", base + "[[health.check]]\ntype = \"ping\"\n", `health.check[0].type: unknown check type "ping"`},
		{"health command not executable", base + "[[health.check]]\ntype = \"command\"\ncommand = [\"/nonexistent/probe\"]\n", "not an executable file"},
		{"valid health", base + "[health]\nprobation = \"1m\"\n[[health.check]]\ntype = \"http\"\nurl = \"http://127.0.0.1:10248/healthz\"\n", ""},
		{"seed", base + "seed = 0\n", ""},
		{"seed too large", base + "seed = 2048\n", "node.seed: 2048 out of range 0-2047"},
		{"seed negative", base + "seed = -1\n", "node.seed: -1 out of range 0-2047"},
		{"seed not a number", base + "seed = \"low\"\n", "seed"},
		{"layout not a dir", strings.Replace(base, `repository = "127.0.0.1:5000/os/node"`, `layout = "nope"`, 1), "source.layout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "root.json"), []byte("{}"), 0o644)
			p := filepath.Join(dir, "config.toml")
			os.WriteFile(p, []byte(c.content), 0o644)
			_, err := Load(p)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

// TestNodeSeed: node.seed is optional, and 0 is a seed, not "unset".
func TestNodeSeed(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "root.json"), []byte("{}"), 0o644)
	for content, want := range map[string]*int{"": nil, "seed = 0\n": new(int)} {
		p := filepath.Join(dir, "config.toml")
		os.WriteFile(p, []byte("[source]\nrepository = \"r.example/os\"\n[trust]\nroot = \"root.json\"\n[node]\nvariant = \"v\"\n"+content), 0o644)
		c, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if (c.Node.Seed == nil) != (want == nil) || (want != nil && *c.Node.Seed != *want) {
			t.Fatalf("%q: seed %v", content, c.Node.Seed)
		}
	}
}
