package config

import (
	"fmt"
	"net"
	"net/url"
	"time"

	"sealift/updater/schedule"
)

// AgentConfig tunes the long-running agent ([agent]).
type AgentConfig struct {
	// Interval between checks; Jitter adds a random share of itself, so a
	// fleet does not ask the registry at the same moment.
	Interval Duration `toml:"interval"`
	Jitter   Duration `toml:"jitter"`
	// Socket is the local API's unix socket (mode 0600).
	Socket string `toml:"socket"`
	// MetricsListen, when set, serves Prometheus metrics on this address
	// (e.g. "127.0.0.1:9273").
	MetricsListen string `toml:"metrics_listen"`
}

// WindowConfig is one weekly maintenance window.
type WindowConfig struct {
	Days     []string `toml:"days"`   // mon..sun
	Start    string   `toml:"start"`  // local "HH:MM"
	Length   string   `toml:"length"` // "2h", "90m"
	TimeZone string   `toml:"time_zone"`
}

// DownloadConfig says when releases may be downloaded and written
// ([download]): strategy "immediate" (any time, the default) or "window".
type DownloadConfig struct {
	Strategy string         `toml:"strategy"`
	Windows  []WindowConfig `toml:"window"`
}

// RebootConfig says when a staged update may reboot the node ([reboot]):
// strategy "immediate", "window", "fleetlock" (windows optional, both
// then apply) or "manual".
type RebootConfig struct {
	Strategy  string          `toml:"strategy"`
	Windows   []WindowConfig  `toml:"window"`
	FleetLock FleetLockConfig `toml:"fleetlock"`
	// Command reboots the machine.
	Command []string `toml:"command"`
}

// FleetLockConfig is the fleet's reboot lock server ([reboot.fleetlock]).
type FleetLockConfig struct {
	// URL is the server's base URL (the protocol's {base}).
	URL   string `toml:"url"`
	Group string `toml:"group"`
	// MachineID is the file the node id is derived from.
	MachineID string `toml:"machine_id"`
}

// agentDefaults fills the agent's sections.
func agentDefaults(c *Config) {
	c.Agent = AgentConfig{Interval: Duration{time.Hour}, Jitter: Duration{10 * time.Minute}, Socket: "/run/sealift/agent.sock"}
	c.Download = DownloadConfig{Strategy: "immediate"}
	c.Reboot = RebootConfig{Strategy: "immediate", Command: []string{"systemctl", "reboot"},
		FleetLock: FleetLockConfig{Group: "default", MachineID: "/etc/machine-id"}}
}

// Windows parses windows, naming fields under prefix.
func parseWindows(prefix string, ws []WindowConfig) (schedule.Windows, []error) {
	var out schedule.Windows
	var errs []error
	for i, w := range ws {
		win, err := schedule.Parse(fmt.Sprintf("%s[%d]", prefix, i), w.Days, w.Start, w.Length, w.TimeZone)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, win)
	}
	return out, errs
}

// DownloadWindows returns the parsed download windows (none: any time).
func (c *Config) DownloadWindows() schedule.Windows {
	if c.Download.Strategy != "window" {
		return nil
	}
	ws, _ := parseWindows("download.window", c.Download.Windows)
	return ws
}

// RebootWindows returns the parsed reboot windows.
func (c *Config) RebootWindows() schedule.Windows {
	ws, _ := parseWindows("reboot.window", c.Reboot.Windows)
	return ws
}

// validateAgent checks the agent's sections; errors name the field.
func (c *Config) validateAgent(bad func(field, format string, a ...any)) []error {
	var errs []error
	a := c.Agent
	if a.Interval.Duration < time.Minute {
		bad("agent.interval", "%s is shorter than a minute", a.Interval.Duration)
	}
	if a.Jitter.Duration > a.Interval.Duration {
		bad("agent.jitter", "%s is longer than agent.interval", a.Jitter.Duration)
	}
	if a.Socket == "" {
		bad("agent.socket", "required")
	}
	if a.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(a.MetricsListen); err != nil {
			bad("agent.metrics_listen", "%q: want host:port", a.MetricsListen)
		}
	}
	switch c.Download.Strategy {
	case "immediate":
		if len(c.Download.Windows) > 0 {
			bad("download.window", "windows need download.strategy = \"window\"")
		}
	case "window":
		if len(c.Download.Windows) == 0 {
			bad("download.window", "strategy \"window\" needs at least one [[download.window]]")
		}
		_, werrs := parseWindows("download.window", c.Download.Windows)
		errs = append(errs, werrs...)
	default:
		bad("download.strategy", "%q: want immediate or window", c.Download.Strategy)
	}
	r := c.Reboot
	switch r.Strategy {
	case "immediate", "manual":
		if len(r.Windows) > 0 {
			bad("reboot.window", "windows need reboot.strategy \"window\" or \"fleetlock\"")
		}
	case "window":
		if len(r.Windows) == 0 {
			bad("reboot.window", "strategy \"window\" needs at least one [[reboot.window]]")
		}
	case "fleetlock":
		u, err := url.Parse(r.FleetLock.URL)
		switch {
		case r.FleetLock.URL == "":
			bad("reboot.fleetlock.url", "required with strategy \"fleetlock\"")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("reboot.fleetlock.url", "%q: want an http(s) URL", r.FleetLock.URL)
		}
		if r.FleetLock.Group == "" {
			bad("reboot.fleetlock.group", "required")
		}
	default:
		bad("reboot.strategy", "%q: want immediate, window, fleetlock or manual", r.Strategy)
	}
	_, werrs := parseWindows("reboot.window", r.Windows)
	errs = append(errs, werrs...)
	if len(r.Command) == 0 {
		bad("reboot.command", "required")
	}
	return errs
}
