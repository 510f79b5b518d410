// Package sdnotify tells systemd about a service's state (sd_notify(3)):
// READY=1 once the service serves, STOPPING=1 when it ends, WATCHDOG=1
// to show it is alive. Outside systemd (no NOTIFY_SOCKET) every call is a
// no-op, so a service can call it unconditionally.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Messages of the protocol that sealift sends.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
)

// Notify sends one or more newline-separated assignments to the socket
// named by $NOTIFY_SOCKET. It returns false, nil when there is no socket.
func Notify(state string) (bool, error) {
	return notifyTo(os.Getenv("NOTIFY_SOCKET"), state)
}

func notifyTo(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	// A leading '@' names a socket in the abstract namespace.
	if socket[0] == '@' {
		socket = "\x00" + socket[1:]
	}
	addr := &net.UnixAddr{Name: socket, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}

// WatchdogInterval is how often systemd expects WATCHDOG=1 from this
// process (WatchdogSec= of its unit), or 0 when no watchdog is armed for
// it. Callers ping at half of it, as sd_watchdog_enabled(3) advises.
func WatchdogInterval() time.Duration {
	return watchdogInterval(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
}

func watchdogInterval(usec, pid string, self int) time.Duration {
	if usec == "" {
		return 0
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	// WATCHDOG_PID names the process the watchdog is for; a child that
	// inherited the environment is not it.
	if pid != "" {
		if p, err := strconv.Atoi(pid); err != nil || p != self {
			return 0
		}
	}
	return time.Duration(n) * time.Microsecond
}
