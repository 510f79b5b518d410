// Package health decides whether a freshly booted slot is healthy: it runs
// the configured checks (commands, HTTP probes, systemd units, files)
// until they have passed continuously for a probation window, or until a
// deadline passes. It never decides "healthy" merely because the machine
// booted: at least one check is required.
package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Check types.
const (
	TypeCommand = "command"
	TypeHTTP    = "http"
	TypeSystemd = "systemd"
	TypeFile    = "file"
)

// CheckConfig is one check as written in the config file.
type CheckConfig struct {
	Name         string   `toml:"name"`
	Type         string   `toml:"type"`
	Command      []string `toml:"command"`       // command
	ExpectExit   int      `toml:"expect_exit"`   // command
	URL          string   `toml:"url"`           // http
	ExpectStatus int      `toml:"expect_status"` // http, default 200
	Unit         string   `toml:"unit"`          // systemd
	Path         string   `toml:"path"`          // file
	Timeout      string   `toml:"timeout"`       // default 10s
}

// Config is the [health] section.
type Config struct {
	// Probation: the checks must pass continuously this long.
	Probation string `toml:"probation"`
	// Interval between rounds of checks.
	Interval string `toml:"interval"`
	// Deadline: not healthy by then means unhealthy.
	Deadline string `toml:"deadline"`
	// RebootCommand runs after an unhealthy slot was marked bad.
	RebootCommand []string      `toml:"reboot_command"`
	Checks        []CheckConfig `toml:"check"`
}

// Policy is a validated Config.
type Policy struct {
	Probation, Interval, Deadline time.Duration
	RebootCommand                 []string
	Checks                        []Check
}

// Check is one runnable check.
type Check interface {
	Name() string
	// Run returns nil when healthy, else an error with what was seen.
	Run(ctx context.Context) error
}

// Compile validates the config; every problem names its field.
func (c Config) Compile() (*Policy, error) {
	var errs []error
	dur := func(field, v string, def time.Duration) time.Duration {
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s: invalid duration %q", field, v))
		}
		return d
	}
	p := &Policy{
		Probation:     dur("health.probation", c.Probation, 30*time.Second),
		Interval:      dur("health.interval", c.Interval, 5*time.Second),
		Deadline:      dur("health.deadline", c.Deadline, 5*time.Minute),
		RebootCommand: c.RebootCommand,
	}
	if len(p.RebootCommand) == 0 {
		p.RebootCommand = []string{"systemctl", "reboot"}
	}
	if p.Interval <= 0 {
		errs = append(errs, errors.New("health.interval: must be positive"))
	}
	if p.Deadline < p.Probation {
		errs = append(errs, fmt.Errorf("health.deadline %v is shorter than health.probation %v", p.Deadline, p.Probation))
	}
	if len(c.Checks) == 0 {
		errs = append(errs, errors.New("health.check: at least one check is required (a slot is never marked good merely because it booted)"))
	}
	names := map[string]bool{}
	for i, cc := range c.Checks {
		field := fmt.Sprintf("health.check[%d]", i)
		timeout := dur(field+".timeout", cc.Timeout, 10*time.Second)
		if timeout <= 0 {
			errs = append(errs, fmt.Errorf("%s.timeout: must be positive", field))
		}
		var ch Check
		switch cc.Type {
		case TypeCommand:
			if len(cc.Command) == 0 {
				errs = append(errs, fmt.Errorf("%s.command: required for type command", field))
				continue
			}
			if st, err := os.Stat(cc.Command[0]); err != nil || st.Mode()&0o111 == 0 || !st.Mode().IsRegular() {
				errs = append(errs, fmt.Errorf("%s.command: %q is not an executable file", field, cc.Command[0]))
				continue
			}
			ch = commandCheck{name: cc.Name, argv: cc.Command, expect: cc.ExpectExit, timeout: timeout}
		case TypeHTTP:
			if !strings.HasPrefix(cc.URL, "http://") && !strings.HasPrefix(cc.URL, "https://") {
				errs = append(errs, fmt.Errorf("%s.url: %q is not an http(s) URL", field, cc.URL))
				continue
			}
			want := cc.ExpectStatus
			if want == 0 {
				want = http.StatusOK
			}
			ch = httpCheck{name: cc.Name, url: cc.URL, expect: want, timeout: timeout}
		case TypeSystemd:
			if cc.Unit == "" {
				errs = append(errs, fmt.Errorf("%s.unit: required for type systemd", field))
				continue
			}
			ch = commandCheck{name: cc.Name, argv: []string{"systemctl", "is-active", "--quiet", cc.Unit}, timeout: timeout, what: "unit " + cc.Unit + " is not active"}
		case TypeFile:
			if cc.Path == "" {
				errs = append(errs, fmt.Errorf("%s.path: required for type file", field))
				continue
			}
			ch = fileCheck{name: cc.Name, path: cc.Path}
		default:
			errs = append(errs, fmt.Errorf("%s.type: unknown check type %q (command, http, systemd, file)", field, cc.Type))
			continue
		}
		if n := ch.Name(); names[n] {
			errs = append(errs, fmt.Errorf("%s.name: %q used twice", field, n))
		} else {
			names[n] = true
		}
		p.Checks = append(p.Checks, ch)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

type commandCheck struct {
	name    string
	argv    []string
	expect  int
	timeout time.Duration
	what    string // message on failure instead of the exit code
}

func (c commandCheck) Name() string {
	if c.name != "" {
		return c.name
	}
	return strings.Join(c.argv, " ")
}

func (c commandCheck) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A hung probe's children must not keep the pipes open past the timeout.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("timed out after %v%s", c.timeout, output(out.Bytes()))
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		return err
	}
	if code != c.expect {
		if c.what != "" {
			return fmt.Errorf("%s%s", c.what, output(out.Bytes()))
		}
		return fmt.Errorf("exit code %d, expected %d%s", code, c.expect, output(out.Bytes()))
	}
	return nil
}

type httpCheck struct {
	name    string
	url     string
	expect  int
	timeout time.Duration
}

func (c httpCheck) Name() string {
	if c.name != "" {
		return c.name
	}
	return c.url
}

func (c httpCheck) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("timed out after %v", c.timeout)
		}
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != c.expect {
		return fmt.Errorf("HTTP status %d, expected %d%s", resp.StatusCode, c.expect, output(body))
	}
	return nil
}

type fileCheck struct{ name, path string }

func (c fileCheck) Name() string {
	if c.name != "" {
		return c.name
	}
	return "file " + c.path
}

func (c fileCheck) Run(context.Context) error {
	if _, err := os.Stat(c.path); err != nil {
		return fmt.Errorf("%s does not exist: %v", c.path, err)
	}
	return nil
}

// output renders a check's output for a message: trimmed and bounded.
func output(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return ": " + s
}

// Clock is the time source; tests use a fake.
type Clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the wall clock.
type RealClock struct{}

func (RealClock) Now() time.Time { return time.Now() }

func (RealClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Verdict is what Evaluate concluded.
type Verdict struct {
	Healthy bool
	// Failed names the last failing check and what it said, when unhealthy.
	Failed string
	Output string
	Rounds int
	Took   time.Duration
}

// Evaluate runs rounds of checks every Interval. Healthy once every check
// has passed in every round for Probation; unhealthy when the Deadline
// passes first. A failing round restarts the probation window, so a flaky
// service must settle before the slot is kept.
func (p *Policy) Evaluate(ctx context.Context, clk Clock) (Verdict, error) {
	start := clk.Now()
	var since time.Time // start of the current all-pass streak
	var v Verdict
	for {
		v.Rounds++
		failed := ""
		var ferr error
		for _, c := range p.Checks {
			if err := c.Run(ctx); err != nil {
				if ctx.Err() != nil {
					return v, ctx.Err()
				}
				failed, ferr = c.Name(), err
				break
			}
		}
		now := clk.Now()
		v.Took = now.Sub(start)
		if ferr == nil {
			if since.IsZero() {
				since = now
			}
			if now.Sub(since) >= p.Probation {
				v.Healthy, v.Failed, v.Output = true, "", ""
				return v, nil
			}
		} else {
			since = time.Time{}
			v.Failed, v.Output = failed, ferr.Error()
		}
		if now.Sub(start) >= p.Deadline {
			if v.Failed == "" {
				v.Failed, v.Output = "probation", fmt.Sprintf("checks did not pass for %v in a row before the %v deadline", p.Probation, p.Deadline)
			}
			return v, nil
		}
		if err := clk.Sleep(ctx, p.Interval); err != nil {
			return v, err
		}
	}
}
