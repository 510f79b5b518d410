package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name := filepath.Join(t.TempDir(), "notify")
		listen, socket := name, name
		if abstract {
			listen = "\x00sealift-sdnotify-test-" + filepath.Base(t.TempDir())
			socket = "@" + listen[1:]
		}
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: listen, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		sent, err := notifyTo(socket, Ready+"\nSTATUS=serving")
		if err != nil || !sent {
			t.Fatalf("abstract=%v: sent %v, %v", abstract, sent, err)
		}
		buf := make([]byte, 256)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != "READY=1\nSTATUS=serving" {
			t.Fatalf("abstract=%v: got %q, %v", abstract, buf[:n], err)
		}
		conn.Close()
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	if sent, err := notifyTo("", Ready); sent || err != nil {
		t.Fatalf("no socket: sent %v, %v", sent, err)
	}
	if _, err := notifyTo(filepath.Join(t.TempDir(), "absent"), Ready); err == nil {
		t.Fatal("a socket that does not exist: no error")
	}
}

func TestWatchdogInterval(t *testing.T) {
	cases := []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"300000000", "", 5 * time.Minute},
		{"300000000", "42", 5 * time.Minute},
		{"300000000", "43", 0}, // meant for another process
		{"300000000", "x", 0},
		{"0", "", 0},
		{"-5", "", 0},
		{"soon", "", 0},
	}
	for _, c := range cases {
		if got := watchdogInterval(c.usec, c.pid, 42); got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}
