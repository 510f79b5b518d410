package main

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"sealift/updater/agent"
	"sealift/updater/config"
	"sealift/updater/fleetlock"
)

// agentNode is a node whose config has the agent's sections: reboots
// only on Saturdays 02:00-04:00 UTC, by a command that leaves a mark.
func agentNode(t *testing.T, extra string) (p *publisher, disk, cfg, mark string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "media")
	os.MkdirAll(dir, 0o755)
	p = newPublisher(t, "--layout", dir)
	mark = filepath.Join(t.TempDir(), "rebooted")
	disk, cfg = newNode(t, p, fmt.Sprintf(`[source]
layout = %q
[reboot]
strategy = "window"
command = ["/bin/sh", "-c", "echo reboot >> %s"]
[[reboot.window]]
days = ["sat"]
start = "02:00"
length = "2h"
time_zone = "UTC"
%s`, dir, mark, extra))
	return p, disk, cfg, mark
}

// TestCLIAgentStagesThenRebootsInWindow runs single agent decisions at
// pretend times: the release is staged on a Friday, the reboot waits for
// Saturday's window.
func TestCLIAgentStagesThenRebootsInWindow(t *testing.T) {
	p, disk, cfg, mark := agentNode(t, "")
	p.release("1.0.0", 1)
	agentAt := func(now string) string {
		return mustCLI(t, "agent", "--once", "--now", now, "--disk", disk, "--config", cfg, "--log-level", "error")
	}
	if out := agentAt("2026-11-27T12:00:00Z"); !strings.HasPrefix(out, "staged: staged 1.0.0 in slot A") {
		t.Fatalf("friday, first step: %s", out)
	}
	out := agentAt("2026-11-27T12:00:10Z")
	if !strings.HasPrefix(out, "wait-window:") || !strings.Contains(out, "next step at 2026-11-28T02:00:00Z") {
		t.Fatalf("friday, second step: %s", out)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("rebooted outside the window")
	}
	if out := agentAt("2026-11-28T02:30:00Z"); !strings.HasPrefix(out, "rebooting:") {
		t.Fatalf("saturday: %s", out)
	}
	if b, err := os.ReadFile(mark); err != nil || string(b) != "reboot\n" {
		t.Fatalf("reboot command: %q %v", b, err)
	}
	mustCLI(t, "boot", "simulate", "--disk", disk, "--apply")
	if out := agentAt("2026-11-28T02:31:00Z"); !strings.HasPrefix(out, "trial:") {
		t.Fatalf("after the reboot: %s", out)
	}
	mustCLI(t, "mark-good", "--disk", disk)
	if out := agentAt("2026-11-28T02:32:00Z"); !strings.HasPrefix(out, "up-to-date:") {
		t.Fatalf("after the health check: %s", out)
	}
	ev := mustCLI(t, "events", "--disk", disk)
	for _, want := range []string{"installed", "reboot-waiting", "rebooting into 1.0.0 in slot A (reboot strategy window)", "marked-good"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events lack %q:\n%s", want, ev)
		}
	}
	if code, _, errs := cli(t, "agent", "--now", "2026-11-28T02:32:00Z", "--disk", disk, "--config", cfg); code != exitUsage {
		t.Errorf("--now without --once: exit %d %s", code, errs)
	}
}

// TestCLIThroughAgent runs the agent's loop and checks that CLI commands
// without --disk go through its socket.
func TestCLIThroughAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	p, disk, cfg, _ := agentNode(t, fmt.Sprintf("[agent]\nsocket = %q\n", sock))
	p.release("1.0.0", 1)
	// As under systemd: a notify socket and a watchdog of 200 ms.
	notify := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	done := make(chan int, 1)
	go func() {
		code, _, _ := cli(t, "agent", "--disk", disk, "--config", cfg, "--log-level", "error")
		done <- code
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent never opened its socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// READY=1 comes once the API serves; then the steps' STATUS= lines
	// and the watchdog's pings.
	notify.expect(t, "READY=1")
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("READY=1 before the API socket exists: %v", err)
	}
	notify.expect(t, "STATUS=staged: staged 1.0.0 in slot A")
	notify.expect(t, "WATCHDOG=1")
	// The first step stages 1.0.0 and then waits for the window.
	var out string
	for time.Now().Before(deadline) {
		out = mustCLI(t, "status", "--agent-socket", sock)
		if strings.Contains(out, "next maintenance window") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "through the agent") || !strings.Contains(out, "reboot strategy window") {
		t.Fatalf("status through the agent:\n%s", out)
	}
	if ev := mustCLI(t, "events", "--agent-socket", sock); !strings.Contains(ev, "agent started") {
		t.Fatalf("events through the agent:\n%s", ev)
	}
	if out := mustCLI(t, "cancel", "--agent-socket", sock); !strings.Contains(out, "through the agent") || !strings.Contains(out, "1.0.0 is skipped from now on") {
		t.Fatalf("cancel: %s", out)
	}
	// Holds through the agent: set, shown, honoured by apply, cleared;
	// refusals exit as they do on the disk.
	if out := mustCLI(t, "hold", "pause", "--agent-socket", sock, "--reason", "change freeze"); !strings.Contains(out, "hold pause set by "+operator()+" (through the agent)") {
		t.Fatalf("hold pause: %s", out)
	}
	if out := mustCLI(t, "status", "--agent-socket", sock); !strings.Contains(out, "hold:      pause, set by "+operator()) || !strings.Contains(out, "hold:      skip 1.0.0") {
		t.Fatalf("status with holds through the agent:\n%s", out)
	}
	if code, _, errs := cli(t, "update", "--agent-socket", sock, "--config", cfg); code != exitError || !strings.Contains(errs, "updates are paused by "+operator()+" (change freeze") {
		t.Fatalf("update while paused: exit %d %s", code, errs)
	}
	if out := mustCLI(t, "hold", "clear", "pause", "--agent-socket", sock); !strings.Contains(out, "cleared hold pause (through the agent)") {
		t.Fatalf("hold clear: %s", out)
	}
	if code, _, errs := cli(t, "hold", "clear", "pause", "--agent-socket", sock); code != exitNothing {
		t.Fatalf("clearing it again: exit %d %s", code, errs)
	}
	if out := mustCLI(t, "hold", "list", "--agent-socket", sock); !strings.Contains(out, "skip 1.0.0") || strings.Contains(out, "pause") {
		t.Fatalf("hold list through the agent:\n%s", out)
	}
	// 1.0.0 stays skipped; a newer release is for the agent to stage.
	p.release("1.1.0", 2)
	if out := mustCLI(t, "update", "--agent-socket", sock, "--config", cfg); !strings.Contains(out, "asked it to check and stage now") {
		t.Fatalf("update while the agent runs: %s", out)
	}
	// SIGTERM ends the agent cleanly (signal.NotifyContext catches it).
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("agent exit %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("socket left behind")
	}
	notify.expect(t, "STOPPING=1")
	// The apply woke the agent, which was staging 1.1.0 when SIGTERM came:
	// whatever it was doing, the disk is never half-flipped, and it never
	// staged the skipped 1.0.0 again.
	st := status(t, disk)
	if p := st.Pending; p != nil {
		if p.Version != "1.1.0" {
			t.Fatalf("pending %+v: the cancelled release was staged again", p)
		}
		bootable := st.Slots[0].Bootable
		if (p.Phase == "writing" && bootable) || (p.Phase == "trial" && !bootable) {
			t.Fatalf("pending %+v with slot A bootable=%v", p, bootable)
		}
	}
}

// TestCLITwoAgentsOneFleetLockSlot: two nodes with staged updates share a
// FleetLock group of one slot on a real server (memory store): the second
// waits while the first reboots and is on trial, and reboots only after
// the first was judged and gave the lock back.
func TestCLITwoAgentsOneFleetLockSlot(t *testing.T) {
	srv, err := fleetlock.NewServer(fleetlock.Config{Store: fleetlock.NewMemory(), Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	type node struct{ disk, cfg, mark string }
	var nodes []node
	for i, id := range []string{"0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"} {
		mid := filepath.Join(t.TempDir(), "machine-id")
		os.WriteFile(mid, []byte(id+"\n"), 0o644)
		p, disk, cfg, mark := agentNode(t, "")
		// Replace the window strategy by the fleet lock (windows kept: both apply).
		b, _ := os.ReadFile(cfg)
		c := strings.Replace(string(b), `strategy = "window"`, `strategy = "fleetlock"`, 1) +
			fmt.Sprintf("[reboot.fleetlock]\nurl = %q\ngroup = \"workers\"\nmachine_id = %q\n", hs.URL, mid)
		os.WriteFile(cfg, []byte(c), 0o644)
		p.release("1.0.0", int64(i+1))
		nodes = append(nodes, node{disk, cfg, mark})
	}
	step := func(n node, now, want string) {
		t.Helper()
		out := mustCLI(t, "agent", "--once", "--now", now, "--disk", n.disk, "--config", n.cfg, "--log-level", "error")
		if !strings.HasPrefix(out, want+":") {
			t.Fatalf("%s at %s: %s, want %s", n.disk, now, out, want)
		}
	}
	rebooted := func(n node) bool { _, err := os.Stat(n.mark); return err == nil }
	const fri, sat = "2026-11-27T12:00:00Z", "2026-11-28T02:30:00Z"
	for _, n := range nodes {
		step(n, fri, "staged")
	}
	step(nodes[0], sat, "rebooting")
	step(nodes[1], sat, "wait-lock")
	if !rebooted(nodes[0]) || rebooted(nodes[1]) {
		t.Fatal("both nodes rebooted, or the first did not")
	}
	mustCLI(t, "boot", "simulate", "--disk", nodes[0].disk, "--apply")
	step(nodes[0], sat, "trial")
	step(nodes[1], sat, "wait-lock")
	mustCLI(t, "mark-good", "--disk", nodes[0].disk)
	step(nodes[0], sat, "lock-released")
	step(nodes[1], sat, "rebooting")
	if !rebooted(nodes[1]) {
		t.Fatal("the second node did not reboot once the lock was free")
	}
	st, err := srv.Status(context.Background(), "workers")
	if err != nil || len(st.Groups) != 1 || len(st.Groups[0].Holders) != 1 {
		t.Fatalf("holders %+v, %v", st, err)
	}
}

func TestRebootPlan(t *testing.T) {
	win := []config.WindowConfig{{Days: []string{"sat"}, Start: "02:00", Length: "2h", TimeZone: "Europe/Berlin"}}
	fri := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	sat := time.Date(2026, 11, 28, 1, 30, 0, 0, time.UTC) // 02:30 in Berlin
	tests := []struct {
		strategy string
		windows  []config.WindowConfig
		now      time.Time
		want     string
	}{
		{"immediate", nil, fri, "as soon as an update is staged"},
		{"manual", nil, fri, "an operator reboots"},
		{"window", win, fri, "in the next maintenance window, 2026-11-28T02:00:00+01:00 (in 13h0m0s)"},
		{"window", win, sat, "now, inside a maintenance window"},
		{"fleetlock", nil, fri, "once the fleet lock of group workers at http://127.0.0.1:8470 is granted"},
		{"fleetlock", win, fri, "in the next maintenance window, 2026-11-28T02:00:00+01:00 (in 13h0m0s), once the fleet lock"},
	}
	for _, tc := range tests {
		c := config.Defaults()
		c.Reboot.Strategy, c.Reboot.Windows = tc.strategy, tc.windows
		c.Reboot.FleetLock.URL, c.Reboot.FleetLock.Group = "http://127.0.0.1:8470", "workers"
		if got := rebootPlan(&c, tc.now); !strings.Contains(got, tc.want) {
			t.Errorf("%s at %s: %q, want %q", tc.strategy, tc.now, got, tc.want)
		}
	}
}

// notifySocket stands for systemd's end of sd_notify(3).
type notifySocket struct{ msgs chan string }

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	n := &notifySocket{msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// expect waits for a message that starts with prefix, skipping others.
func (n *notifySocket) expect(t *testing.T, prefix string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed before %q", prefix)
			}
			for _, line := range strings.Split(m, "\n") {
				if strings.HasPrefix(line, prefix) {
					return
				}
			}
		case <-timeout:
			t.Fatalf("no %q on the notify socket", prefix)
		}
	}
}

// TestStagingProgress: the agent logs a write at each quarter, once.
func TestStagingProgress(t *testing.T) {
	log := logrus.New()
	var buf strings.Builder
	log.SetOutput(&buf)
	log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	beats := 0
	p := stagingProgress(log, func() { beats++ })
	const mib = 1 << 20
	for done := int64(0); done <= 160*mib; done += 4 * mib {
		p(done, 160*mib)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		_, msg, _ := strings.Cut(l, `msg="`)
		msg, _, _ = strings.Cut(msg, `"`)
		got = append(got, msg)
	}
	if beats != 41 {
		t.Fatalf("%d beats for 41 progress calls", beats)
	}
	want := []string{"25", "50", "75", "100"}
	if len(got) != len(want) {
		t.Fatalf("logged %q", got)
	}
	for i, w := range want {
		if got[i] != "staging: "+w+"% of 160 MiB written into the inactive slot" {
			t.Fatalf("line %d: %q", i, got[i])
		}
	}
}

// TestAgentLine: status through the agent before its first step is done
// says so, instead of a step at the zero time.
func TestAgentLine(t *testing.T) {
	at := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		last agent.StepInfo
		want string
	}{
		{agent.StepInfo{}, "agent:     taking its first step (reboot strategy window, checks every 1h0m0s)"},
		{agent.StepInfo{At: at, Detail: "up to date", Next: at.Add(time.Hour)},
			"agent:     up to date (reboot strategy window, checks every 1h0m0s); next step 2026-12-05T03:00:00Z"},
	} {
		if got := agentLine(tc.last, "window", "1h0m0s"); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}
