//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// bootTimeout bounds one boot; a boot that hangs counts as failed.
func bootTimeout() time.Duration {
	if v := os.Getenv("SEALIFT_E2E_BOOT_TIMEOUT"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s > 0 {
			return time.Duration(s) * time.Second
		}
	}
	return 180 * time.Second
}

// Boot is one qemu run and what its serial console said.
type Boot struct {
	N        int
	Log      string // serial log file
	Wall     time.Duration
	TimedOut bool
	Fatal    string // the fatal console message that ended the boot early
	ExitErr  error
	Console  string // cleaned serial output

	PowerCut bool   // qemu was killed on the power-cut marker, as planned
	Killed   bool   // the harness ended qemu (else the guest powered off or reset)
	Cmdline  string // the kernel's "Command line:" ("" if no kernel started)
	Panic    string // the kernel's panic message ("Kernel panic - not syncing: ...")

	GrubChose string // slot sealift's grub.cfg chose ("sealift-grub: chose slot X")
	Entry     string // the entry systemd-boot booted (LoaderEntrySelected)
	Slot      string // "SEALIFT-E2E: booted slot=X version=V"
	Version   string
	Done      bool   // the root init reached "done" and powered off
	Uptime    string // guest uptime at "done"

	PoweredOff bool // the kernel powered the machine off ("reboot: Power down")
	Rebooted   bool // the kernel restarted the machine ("reboot: Restarting system")
}

// fatalPatterns on the console end a boot early: the guest stopped where
// nothing ends qemu by itself (a panic without panic=N, GRUB waiting for a
// key after its entry failed, the firmware's shell after the loader gave
// up). A boot stuck like that would otherwise run into the timeout.
var fatalPatterns = []string{
	"Kernel panic - not syncing",
	"KVM internal error",
	"Failed to boot both default and fallback entries",
	"UEFI Interactive Shell",
}

// bootOptions vary one boot.
type bootOptions struct {
	// extraDisk is attached read-only as the second virtio disk (vdb).
	extraDisk string
	// powerCutOn, when the console prints it, makes the harness kill qemu
	// at once (SIGKILL): the guest loses power, and whatever it had not yet
	// written out with it.
	powerCutOn string
	// panicOK: the kernel is meant to panic; that ends the boot (panic=N
	// reboots), not the test.
	panicOK bool
	// firmwareShellOK: the bootloader is meant to give up and return to
	// the firmware, whose shell then waits; ending qemu there (a reset, as
	// a hardware watchdog would do) ends the boot, not the test.
	firmwareShellOK bool

	// The node scenarios (node_test.go): qemu runs inside the lab's
	// network namespace with a user-mode NIC, the guest's clock starts
	// at rtc, and watch sees the console as it grows (every 200 ms); when
	// it returns true the lab's control server tells the guest to shut
	// down cleanly.
	lab   *lab
	rtc   time.Time
	watch func(console string) (powerOff bool)
	// timeout overrides bootTimeout() for this boot.
	timeout time.Duration
}

var (
	ansiRe   = regexp.MustCompile(`\x1b\[[0-9;?=]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>c]`)
	grubRe   = regexp.MustCompile(`sealift-grub: chose slot ([AB])`)
	cmdRe    = regexp.MustCompile(`\] Command line: (.*)`)
	panicRe  = regexp.MustCompile(`Kernel panic - not syncing:.*`)
	bootedRe = regexp.MustCompile(`SEALIFT-E2E: booted slot=(\S*) version=(\S*)`)
	entryRe  = regexp.MustCompile(`SEALIFT-E2E: loader entry=(\S+)`)
	doneRe   = regexp.MustCompile(`SEALIFT-E2E: done slot=\S* version=\S* uptime=(\S+)`)
)

func cleanConsole(raw []byte) string {
	s := strings.ReplaceAll(string(raw), "\r", "")
	return ansiRe.ReplaceAllString(s, "")
}

// bootOnce boots the disk in a fresh qemu until the guest powers off or
// reboots (-no-reboot makes both end qemu), or the timeout.
func bootOnce(a *Assets, disk, logPath string, n int, o bootOptions) (*Boot, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{
		"-m", "512", "-nographic", "-no-reboot",
		"-bios", a.OVMF,
		"-drive", "file=" + disk + ",if=virtio,format=raw",
	}
	if o.lab != nil {
		args = append(args, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
		// What the control server says is for this boot only.
		o.lab.control.reset()
	} else {
		args = append(args, "-nic", "none")
	}
	if !o.rtc.IsZero() {
		args = append(args, "-rtc", "base="+o.rtc.UTC().Format("2006-01-02T15:04:05"))
	}
	if o.extraDisk != "" {
		args = append(args, "-drive", "file="+o.extraDisk+",if=virtio,format=raw,readonly=on")
	}
	if a.KVM {
		args = append(args, "-enable-kvm", "-cpu", "host")
	}
	timeout := bootTimeout()
	if o.timeout > 0 {
		timeout = o.timeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	if o.lab != nil {
		// nsenter joins the namespace and execs qemu (no fork), so the
		// process killed on a power cut is qemu itself.
		cmd = exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + o.lab.ns, "--", "qemu-system-x86_64"}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 5 * time.Second
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	// A guest that cannot go on (kernel panic, KVM failure) never ends
	// qemu by itself: end it soon after, as a failed boot. The power-cut
	// marker ends it at once.
	fatal := make(chan string, 1)
	cut := make(chan struct{}, 1)
	stop := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		poweringOff := false
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			raw, _ := os.ReadFile(logPath)
			if o.watch != nil && !poweringOff && o.watch(cleanConsole(raw)) {
				poweringOff = true
				o.lab.control.powerOff()
			}
			if o.powerCutOn != "" && bytes.Contains(raw, []byte(o.powerCutOn)) {
				cmd.Process.Kill()
				cut <- struct{}{}
				return
			}
			for _, p := range fatalPatterns {
				if bytes.Contains(raw, []byte(p)) {
					fatal <- p
					time.Sleep(2 * time.Second) // let the trace reach the log
					cmd.Process.Kill()
					return
				}
			}
		}
	}()
	runErr := cmd.Wait()
	close(stop)
	<-watcherDone // what the watch set is read after this
	b := &Boot{N: n, Log: logPath, Wall: time.Since(t0)}
	select {
	case b.Fatal = <-fatal:
	case <-cut:
		b.PowerCut = true
	default:
	}
	switch {
	case b.Fatal != "", b.PowerCut:
		b.Killed = runErr != nil
	case ctx.Err() != nil:
		b.TimedOut = true
	case runErr != nil:
		b.ExitErr = runErr
	}
	logf.Sync()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		return nil, err
	}
	b.Console = cleanConsole(raw)
	if m := cmdRe.FindStringSubmatch(b.Console); m != nil {
		b.Cmdline = m[1]
	}
	b.Panic = panicRe.FindString(b.Console)
	if m := grubRe.FindAllStringSubmatch(b.Console, -1); m != nil {
		b.GrubChose = m[len(m)-1][1]
	}
	if m := bootedRe.FindStringSubmatch(b.Console); m != nil {
		b.Slot, b.Version = m[1], m[2]
	}
	if m := entryRe.FindStringSubmatch(b.Console); m != nil {
		b.Entry = m[1]
	}
	if m := doneRe.FindStringSubmatch(b.Console); m != nil {
		b.Done, b.Uptime = true, m[1]
	}
	// A systemd guest ends with the kernel's last words.
	b.PoweredOff = strings.Contains(b.Console, "reboot: Power down")
	b.Rebooted = strings.Contains(b.Console, "reboot: Restarting system")
	if b.ExitErr != nil {
		return b, fmt.Errorf("qemu failed: %w", b.ExitErr)
	}
	return b, nil
}

// Lines returns the console lines that contain substr.
func (b *Boot) Lines(substr string) []string {
	var out []string
	for _, l := range strings.Split(b.Console, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// Has reports whether a console line contains substr.
func (b *Boot) Has(substr string) bool { return strings.Contains(b.Console, substr) }

// Markers is the boot's story in one line, for the test log.
func (b *Boot) Markers() string {
	var parts []string
	for _, l := range strings.Split(b.Console, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "sealift-grub:"),
			strings.HasPrefix(l, "sealift-e2e-grub: no"),
			strings.HasPrefix(l, "SEALIFT-E2E-INITRD: FAIL"),
			strings.HasPrefix(l, "SEALIFT-E2E: booted"),
			strings.HasPrefix(l, "SEALIFT-E2E: loader entry="),
			strings.HasPrefix(l, "SEALIFT-E2E: root "),
			strings.HasPrefix(l, "SEALIFT-E2E: health"),
			strings.HasPrefix(l, "SEALIFT-E2E: rebooting"),
			strings.HasPrefix(l, "SEALIFT-E2E: step"),
			strings.HasPrefix(l, "SEALIFT-E2E: done"),
			strings.Contains(l, "SEALIFT-E2E: power cut"), // may follow a progress bar
			strings.Contains(l, "Kernel panic"),
			strings.Contains(l, "Error loading"): // systemd-boot gave up on an entry
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " | ")
}

// Tail is the end of the console, for failure messages.
func (b *Boot) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.Console, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Summary is one line per boot: wall time and what happened.
func (b *Boot) Summary() string {
	state := "powered off"
	switch {
	case b.PowerCut:
		state = "power cut"
	case b.Fatal != "" && !b.Killed:
		state = "reset after: " + b.Fatal
	case b.Fatal != "":
		state = "ended early: " + b.Fatal
	case b.TimedOut:
		state = "TIMED OUT"
	case b.ExitErr != nil:
		state = "qemu error: " + b.ExitErr.Error()
	case b.PoweredOff:
		state = "powered off"
	case b.Rebooted:
		state = "rebooted"
	case !b.Done:
		state = "rebooted before done"
	}
	up := ""
	if b.Uptime != "" {
		up = ", guest uptime at done " + b.Uptime + "s"
	}
	loader := "grub=" + orDash(b.GrubChose)
	if b.Entry != "" {
		loader = "sd-boot entry=" + b.Entry
	}
	return fmt.Sprintf("boot %d: %.1fs wall (%s%s) %s slot=%s version=%s",
		b.N, b.Wall.Seconds(), state, up, loader, orDash(b.Slot), orDash(b.Version))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
