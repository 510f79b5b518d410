package main

import (
	"fmt"
	"os/exec"
	"strings"
)

// runReboot runs the configured reboot command. It is a command, not a
// syscall, so that the init system shuts services down properly and tests
// can substitute a harmless one.
func runReboot(g *globals, args []string) error {
	if len(args) == 0 {
		return usageError{"empty reboot command"}
	}
	command := strings.Join(args, " ")
	g.log.WithField("command", command).Info("rebooting")
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("reboot command %q: %v: %s", command, err, out)
	}
	return nil
}
