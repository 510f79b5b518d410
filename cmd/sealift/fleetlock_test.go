package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/updater/fleetlock"
)

// TestFleetlockCLI runs `fleetlock serve` in-process on loopback ports and
// drives it with the client and operator commands.
func TestFleetlockCLI(t *testing.T) {
	type addrs struct {
		protocol, admin string
		stop            func()
	}
	ready := make(chan addrs, 1)
	fleetlockServing = func(p, a string, stop func()) { ready <- addrs{p, a, stop} }
	defer func() { fleetlockServing = nil }()
	done := make(chan int, 1)
	var serveErr string
	go func() {
		code, _, errs := cli(t, "fleetlock", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			"--base-path", "/fleet", "--slots", "1", "--group-slots", "db=2", "--group-slots", "frozen=0", "--log-level", "error")
		serveErr = errs
		done <- code
	}()
	var a addrs
	select {
	case a = <-ready:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, serveErr)
	}
	server := "--server=http://" + a.protocol + "/fleet"
	admin := "--server=http://" + a.admin

	mustCLI(t, "fleetlock", "lock", server, "--id", "a")
	code, _, errs := cli(t, "fleetlock", "lock", server, "--id", "b")
	if code != exitError || !strings.Contains(errs, fleetlock.KindSemaphoreFull) {
		t.Fatalf("second lock: exit %d: %s", code, errs)
	}
	mustCLI(t, "fleetlock", "lock", server, "--id", "b", "--group", "db")
	if code, _, errs := cli(t, "fleetlock", "lock", server, "--id", "b", "--group", "frozen"); code != exitError || !strings.Contains(errs, "closed") {
		t.Fatalf("closed group: exit %d: %s", code, errs)
	}
	// The default id comes from the machine id.
	mid := filepath.Join(t.TempDir(), "machine-id")
	os.WriteFile(mid, []byte("3d1219c7c4c5404aaa1f6d2a48adfda4\n"), 0o644)
	if out := mustCLI(t, "fleetlock", "lock", server, "--group", "db", "--machine-id", mid); !strings.HasPrefix(out, "50aab269a4064f9189f7247c69971faf holds a reboot slot in group db") {
		t.Fatalf("lock by machine id: %q", out)
	}
	if out := mustCLI(t, "fleetlock", "id", "--machine-id", mid); out != "50aab269a4064f9189f7247c69971faf\n" {
		t.Fatalf("id: %q", out)
	}

	var st fleetlock.Status
	if err := json.Unmarshal([]byte(mustCLI(t, "fleetlock", "status", admin, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	held := map[string][]string{}
	for _, g := range st.Groups {
		held[g.Group] = []string{}
		for _, h := range g.Holders {
			held[g.Group] = append(held[g.Group], h.ID)
		}
	}
	if len(held) != 3 || strings.Join(held["default"], ",") != "a" || len(held["db"]) != 2 || len(held["frozen"]) != 0 {
		t.Fatalf("status: %+v", st)
	}
	out := mustCLI(t, "fleetlock", "status", admin, "--group", "db")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || strings.Join(strings.Fields(lines[1]), " ") != "GROUP HELD HOLDER SINCE FOR" ||
		strings.Join(strings.Fields(lines[2])[:3], " ") != "db 2/2 b" || strings.Fields(lines[3])[0] != "50aab269a4064f9189f7247c69971faf" {
		t.Fatalf("status --group db:\n%s", out)
	}

	if out := mustCLI(t, "fleetlock", "release", admin, "--group", "db", "--id", "b"); !strings.Contains(out, "released the reboot slot of b in group db") {
		t.Fatalf("release: %q", out)
	}
	if code, _, errs := cli(t, "fleetlock", "release", admin, "--group", "db", "--id", "b"); code != exitError || !strings.Contains(errs, fleetlock.KindNotHeld) {
		t.Fatalf("release again: exit %d: %s", code, errs)
	}
	mustCLI(t, "fleetlock", "unlock", server, "--id", "a")
	mustCLI(t, "fleetlock", "unlock", server, "--id", "a") // holds nothing: still fine
	mustCLI(t, "fleetlock", "lock", server, "--id", "b")

	// The admin API is not on the protocol listener, and vice versa.
	if code, out, errs := cli(t, "fleetlock", "status", "--server=http://"+a.protocol); code != exitError {
		t.Fatalf("status on the protocol listener: exit %d: %s%s", code, out, errs)
	}
	if code, _, _ := cli(t, "fleetlock", "lock", "--server=http://"+a.admin, "--id", "c"); code != exitError {
		t.Fatalf("lock on the admin listener: exit %d", code)
	}

	a.stop()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d: %s", code, serveErr)
	}
}

func TestFleetlockUsage(t *testing.T) {
	for _, args := range [][]string{
		{"fleetlock", "serve", "--slots", "0"},
		{"fleetlock", "serve", "--group-slots", "db"},
		{"fleetlock", "serve", "--group-slots", "db=-1"},
		{"fleetlock", "serve", "--group-slots", "a/b=1"},
		{"fleetlock", "serve", "--group-slots", "db=1,db=2"},
		{"fleetlock", "serve", "--store", "consul"},
		{"fleetlock", "serve", "extra"},
		{"fleetlock", "lock", "--group", "a/b", "--id", "x"},
		{"fleetlock", "lock", "--id", "a\tb"},
		{"fleetlock", "unlock", "--server", "ftp://example.org", "--id", "x"},
		{"fleetlock", "release", "--group", "db"},
		{"fleetlock", "status", "--group", "a b"},
	} {
		if code, _, errs := cli(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, code, exitUsage, errs)
		}
	}
}

// TestFleetlockSharedListener: one address for both serves the protocol
// and the admin API on one listener.
func TestFleetlockSharedListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ready := make(chan func(), 1)
	fleetlockServing = func(p, a string, stop func()) {
		if p != addr || a != addr {
			t.Errorf("listening on %s and %s, want both on %s", p, a, addr)
		}
		ready <- stop
	}
	defer func() { fleetlockServing = nil }()
	done := make(chan int, 1)
	go func() {
		code, _, _ := cli(t, "fleetlock", "serve", "--listen", addr, "--admin-listen", addr, "--log-level", "error")
		done <- code
	}()
	var stop func()
	select {
	case stop = <-ready:
	case code := <-done:
		t.Fatalf("serve exited %d", code)
	}
	mustCLI(t, "fleetlock", "lock", "--server", "http://"+addr, "--id", "a")
	if out := mustCLI(t, "fleetlock", "status", "--server", "http://"+addr); !strings.Contains(out, "default  1/1   a") {
		t.Fatalf("status:\n%s", out)
	}
	stop()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d", code)
	}
}
