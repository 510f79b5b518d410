package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const agentBase = `
[source]
repository = "127.0.0.1:5000/os/node"
[trust]
root = "root.json"
[node]
variant = "v"
`

func writeConfig(t *testing.T, content string, dropIns map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "root.json"), []byte("{}"), 0o644)
	p := filepath.Join(dir, "config.toml")
	os.WriteFile(p, []byte(content), 0o644)
	if len(dropIns) > 0 {
		d := filepath.Join(dir, "config.d")
		os.MkdirAll(d, 0o755)
		for n, c := range dropIns {
			os.WriteFile(filepath.Join(d, n), []byte(c), 0o644)
		}
	}
	return p
}

func TestAgentConfig(t *testing.T) {
	p := writeConfig(t, agentBase+`
[agent]
interval = "30m"
jitter = "5m"
metrics_listen = "127.0.0.1:9273"
[download]
strategy = "window"
[[download.window]]
days = ["mon", "tue"]
start = "22:00"
length = "4h"
time_zone = "America/New_York"
[reboot]
strategy = "fleetlock"
command = ["/bin/true"]
[reboot.fleetlock]
url = "http://127.0.0.1:8080"
group = "workers"
[[reboot.window]]
days = ["sat"]
start = "02:00"
length = "2h"
time_zone = "Europe/Berlin"
`, nil)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.Interval.Duration != 30*time.Minute || c.Agent.Jitter.Duration != 5*time.Minute || c.Reboot.Strategy != "fleetlock" ||
		c.Reboot.FleetLock.Group != "workers" || len(c.DownloadWindows()) != 1 || len(c.RebootWindows()) != 1 ||
		c.Reboot.Command[0] != "/bin/true" {
		t.Fatalf("%+v", c)
	}
	// Defaults when the sections are absent.
	d, err := Load(writeConfig(t, agentBase, nil))
	if err != nil {
		t.Fatal(err)
	}
	if d.Agent.Interval.Duration != time.Hour || d.Reboot.Strategy != "immediate" || d.Download.Strategy != "immediate" ||
		d.DownloadWindows() != nil || d.Agent.Socket != "/run/sealift/agent.sock" || d.Reboot.FleetLock.MachineID != "/etc/machine-id" {
		t.Fatalf("defaults %+v", d)
	}
}

func TestAgentConfigErrors(t *testing.T) {
	win := "[[reboot.window]]\ndays = [\"sat\"]\nstart = \"02:00\"\nlength = \"2h\"\ntime_zone = \"UTC\"\n"
	cases := []struct{ name, content, want string }{
		{"interval too short", "[agent]\ninterval = \"10s\"\n", "agent.interval"},
		{"jitter longer than interval", "[agent]\ninterval = \"1h\"\njitter = \"2h\"\n", "agent.jitter"},
		{"metrics address", "[agent]\nmetrics_listen = \"9273\"\n", "agent.metrics_listen"},
		{"download strategy", "[download]\nstrategy = \"sometimes\"\n", "download.strategy"},
		{"download window without strategy", "[[download.window]]\ndays = [\"mon\"]\nstart = \"01:00\"\nlength = \"1h\"\ntime_zone = \"UTC\"\n", "download.window"},
		{"window strategy without windows", "[reboot]\nstrategy = \"window\"\n", "reboot.window"},
		{"unknown day", "[reboot]\nstrategy = \"window\"\n" + strings.Replace(win, "sat", "caturday", 1), `reboot.window[0].days: unknown day "caturday"`},
		{"unknown time zone", "[reboot]\nstrategy = \"window\"\n" + strings.Replace(win, "UTC", "Mars/Olympus", 1), "reboot.window[0].time_zone"},
		{"bad start", "[reboot]\nstrategy = \"window\"\n" + strings.Replace(win, "02:00", "25:00", 1), "reboot.window[0].start"},
		{"bad length", "[reboot]\nstrategy = \"window\"\n" + strings.Replace(win, "2h", "forever", 1), "reboot.window[0].length"},
		{"reboot strategy", "[reboot]\nstrategy = \"whenever\"\n", "reboot.strategy"},
		{"fleetlock without url", "[reboot]\nstrategy = \"fleetlock\"\n", "reboot.fleetlock.url"},
		{"fleetlock url without scheme", "[reboot]\nstrategy = \"fleetlock\"\n[reboot.fleetlock]\nurl = \"127.0.0.1:8080\"\n", "reboot.fleetlock.url"},
		{"empty reboot command", "[reboot]\ncommand = []\n", "reboot.command"},
		{"windows with immediate", "[reboot]\nstrategy = \"immediate\"\n" + win, "reboot.window"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, agentBase+c.content, nil))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestDropIns(t *testing.T) {
	p := writeConfig(t, agentBase+"[agent]\ninterval = \"2h\"\n", map[string]string{
		"10-reboot.toml": "[reboot]\nstrategy = \"manual\"\n[trust]\ncache_dir = \"cache\"\n",
		"20-later.toml":  "[agent]\ninterval = \"3h\"\n",
		"README":         "not toml, ignored",
	})
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	dropDir := filepath.Join(filepath.Dir(p), "config.d")
	if c.Agent.Interval.Duration != 3*time.Hour || c.Reboot.Strategy != "manual" || c.Node.Variant != "v" ||
		c.Trust.CacheDir != filepath.Join(dropDir, "cache") || c.Trust.Root != filepath.Join(filepath.Dir(p), "root.json") {
		t.Fatalf("%+v", c)
	}
	// A drop-in's mistakes name the drop-in.
	bad := writeConfig(t, agentBase, map[string]string{"50-bad.toml": "[reboot]\nstrategi = \"manual\"\n"})
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "50-bad.toml") || !strings.Contains(err.Error(), "reboot.strategi") {
		t.Fatalf("got %v", err)
	}
	// Validation happens on the merged result.
	merged := writeConfig(t, agentBase, map[string]string{"50-fleet.toml": "[reboot]\nstrategy = \"fleetlock\"\n"})
	if _, err := Load(merged); err == nil || !strings.Contains(err.Error(), "reboot.fleetlock.url") || !strings.Contains(err.Error(), "50-fleet.toml") {
		t.Fatalf("got %v", err)
	}
}
