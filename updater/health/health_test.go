package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCompileErrors(t *testing.T) {
	okCheck := CheckConfig{Type: TypeFile, Path: "/"}
	notExec := filepath.Join(t.TempDir(), "probe")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"valid", Config{Checks: []CheckConfig{okCheck}}, ""},
		{"no checks", Config{}, "at least one check"},
		{"unknown type", Config{Checks: []CheckConfig{{Type: "ping"}}}, `health.check[0].type: unknown check type "ping"`},
		{"command not executable", Config{Checks: []CheckConfig{{Type: TypeCommand, Command: []string{notExec}}}}, "not an executable file"},
		{"command missing", Config{Checks: []CheckConfig{{Type: TypeCommand, Command: []string{"/nonexistent/probe"}}}}, "health.check[0].command"},
		{"bad url", Config{Checks: []CheckConfig{{Type: TypeHTTP, URL: "127.0.0.1:80"}}}, "not an http(s) URL"},
		{"unit missing", Config{Checks: []CheckConfig{{Type: TypeSystemd}}}, "health.check[0].unit"},
		{"bad timeout", Config{Checks: []CheckConfig{{Type: TypeFile, Path: "/", Timeout: "soon"}}}, "health.check[0].timeout"},
		{"bad probation", Config{Probation: "-1s", Checks: []CheckConfig{okCheck}}, "health.probation"},
		{"deadline shorter than probation", Config{Probation: "10m", Deadline: "1m", Checks: []CheckConfig{okCheck}}, "shorter than"},
		{"duplicate names", Config{Checks: []CheckConfig{{Name: "x", Type: TypeFile, Path: "/"}, {Name: "x", Type: TypeFile, Path: "/"}}}, "used twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.cfg.Compile()
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

// fakeClock advances only when slept on.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return nil
}

// scripted passes or fails per round, from a script.
type scripted struct {
	name   string
	script []bool // true = pass; the last entry repeats
	n      int
}

func (s *scripted) Name() string { return s.name }
func (s *scripted) Run(context.Context) error {
	ok := s.script[min(s.n, len(s.script)-1)]
	s.n++
	if ok {
		return nil
	}
	return errFail
}

var errFail = &failErr{}

type failErr struct{}

func (*failErr) Error() string { return "connection refused" }

func TestEvaluate(t *testing.T) {
	cases := []struct {
		name    string
		script  []bool
		healthy bool
		rounds  int
		failed  string
	}{
		{"healthy after probation", []bool{true}, true, 4, ""},
		{"settles after a flaky start", []bool{false, false, true}, true, 6, ""},
		{"flapping never settles", []bool{true, false}, false, 13, "kubelet"},
		{"never healthy", []bool{false}, false, 13, "kubelet"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &Policy{Probation: 30 * time.Second, Interval: 10 * time.Second, Deadline: 2 * time.Minute,
				Checks: []Check{&scripted{name: "kubelet", script: c.script}}}
			v, err := p.Evaluate(context.Background(), &fakeClock{t: time.Unix(0, 0)})
			if err != nil {
				t.Fatal(err)
			}
			if v.Healthy != c.healthy || v.Rounds != c.rounds || v.Failed != c.failed {
				t.Fatalf("%+v", v)
			}
			if !c.healthy && !strings.Contains(v.Output, "connection refused") {
				t.Fatalf("output %q", v.Output)
			}
		})
	}
}

func TestRealChecks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			http.Error(w, "not ready: etcd unreachable", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/slow" {
			time.Sleep(2 * time.Second)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	present := filepath.Join(dir, "present")
	os.WriteFile(present, nil, 0o644)
	cases := []struct {
		name  string
		check CheckConfig
		want  string // "" = healthy
	}{
		{"command ok", CheckConfig{Type: TypeCommand, Command: []string{"/bin/sh", "-c", "exit 0"}}, ""},
		{"command expected exit", CheckConfig{Type: TypeCommand, Command: []string{"/bin/sh", "-c", "exit 3"}, ExpectExit: 3}, ""},
		{"command fails with output", CheckConfig{Type: TypeCommand, Command: []string{"/bin/sh", "-c", "echo disk full; exit 1"}}, "exit code 1, expected 0: disk full"},
		{"hanging command bounded by its timeout", CheckConfig{Type: TypeCommand, Command: []string{"/bin/sh", "-c", "sleep 30"}, Timeout: "200ms"}, "timed out after 200ms"},
		{"http ok", CheckConfig{Type: TypeHTTP, URL: srv.URL + "/"}, ""},
		{"http bad status", CheckConfig{Type: TypeHTTP, URL: srv.URL + "/bad"}, "HTTP status 503, expected 200: not ready: etcd unreachable"},
		{"http expected status", CheckConfig{Type: TypeHTTP, URL: srv.URL + "/bad", ExpectStatus: 503}, ""},
		{"hanging http bounded by its timeout", CheckConfig{Type: TypeHTTP, URL: srv.URL + "/slow", Timeout: "200ms"}, "timed out"},
		{"file present", CheckConfig{Type: TypeFile, Path: present}, ""},
		{"file missing", CheckConfig{Type: TypeFile, Path: filepath.Join(dir, "missing")}, "does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Config{Checks: []CheckConfig{c.check}}.Compile()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = p.Checks[0].Run(context.Background())
			if time.Since(start) > 5*time.Second {
				t.Fatalf("check took %v", time.Since(start))
			}
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
