package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

	"sealift/bootloader"
	"sealift/bootloader/gptprio"
	"sealift/bootloader/grubenv"
	"sealift/bootloader/sdboot"
	"sealift/partitions"
	"sealift/updater"
	"sealift/updater/agent"
	"sealift/updater/config"
	"sealift/updater/state"
)

// globals are the flags every command shares and what they resolve to.
type globals struct {
	stdout, stderr io.Writer
	log            *logrus.Logger

	disk        string
	stateDir    string
	agentSocket string
	logLevel    string
	logFormat   string
}

// flagSet makes a command's flag set with the shared flags on it.
func (g *globals) flagSet(name, usage string, withDisk bool) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(g.stderr)
	fs.Usage = func() {
		fmt.Fprintf(g.stderr, "Usage: sealift %s\n\n", usage)
		fs.PrintDefaults()
	}
	if withDisk {
		fs.StringVar(&g.disk, "disk", "", "disk or disk image to operate on (default: the disk of the running root)")
		fs.StringVar(&g.stateDir, "state-dir", "", "keep sealift's state in this directory instead of on the disk's ESP")
		fs.StringVar(&g.agentSocket, "agent-socket", config.Defaults().Agent.Socket, "a running agent's API socket; without --disk, commands go through it when it answers")
	}
	fs.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&g.logFormat, "log-format", "auto", "log format: text, json, or auto (text on a terminal)")
	return fs
}

// parse parses flags and sets up logging.
func (g *globals) parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	lvl, err := logrus.ParseLevel(g.logLevel)
	if err != nil {
		return usageError{fmt.Sprintf("--log-level: %v", err)}
	}
	g.log.SetLevel(lvl)
	switch g.logFormat {
	case "json":
		g.log.SetFormatter(&logrus.JSONFormatter{})
	case "text", "auto":
		g.log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: g.logFormat == "auto" && isTerminal(g.stderr)})
	default:
		return usageError{fmt.Sprintf("--log-format %q: want text, json or auto", g.logFormat)}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// session is an opened disk with everything an updater needs.
type session struct {
	disk    *partitions.Disk
	unlock  func() error
	up      *updater.Updater
	booted  bool // the disk is the running system's
	espPath string
}

// Close releases the lock and the disk; calling it again does nothing.
func (s *session) Close() {
	if s.unlock != nil {
		_ = s.unlock()
		s.unlock = nil
	}
	if s.disk != nil {
		_ = s.disk.Close()
		s.disk = nil
	}
}

// open opens the disk named by --disk (or the running root's), locks it
// when it will be written, and builds the updater.
func (g *globals) open(writable bool) (*session, error) {
	path := g.disk
	rootDisk, rootErr := partitions.RootDisk()
	if path == "" {
		if rootErr != nil {
			return nil, usageError{fmt.Sprintf("no --disk given and the disk of the running root is unknown: %v", rootErr)}
		}
		path = rootDisk
	}
	booted := rootErr == nil && sameFile(path, rootDisk)
	d, err := partitions.Open(path, writable)
	if err != nil {
		return nil, err
	}
	s := &session{disk: d, booted: booted}
	if writable {
		unlock, err := d.Lock()
		if err != nil {
			d.Close()
			return nil, err
		}
		s.unlock = unlock
	}
	esp, err := d.ESPFS()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open ESP of %s: %w", path, err)
	}
	name, err := bootloader.RecordedBackend(esp)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s was not set up by 'sealift disk init': %w", path, err)
	}
	backend, err := newBackend(name, d, esp)
	if err != nil {
		s.Close()
		return nil, err
	}
	// The state lives on the disk's ESP unless told otherwise, so the
	// booted system and a host working on the stopped image agree.
	var store state.Store = state.OnESP{FS: esp, Path: state.ESPPath}
	if g.stateDir != "" {
		store = state.Dir(g.stateDir)
	}
	s.up = &updater.Updater{
		Disk:  diskAdapter{d: d, esp: esp},
		Boot:  backend,
		State: store,
	}
	if booted {
		s.up.Runtime = cmdlineRuntime{path: "/proc/cmdline"}
	}
	return s, nil
}

func newBackend(name string, d *partitions.Disk, esp bootloader.FS) (bootloader.Backend, error) {
	switch name {
	case "gptprio":
		return gptprio.New(d), nil
	case "grubenv":
		return grubenv.New(esp), nil
	case "sdboot":
		return sdboot.New(esp), nil
	}
	return nil, fmt.Errorf("unknown boot backend %q (want gptprio, grubenv or sdboot)", name)
}

func sameFile(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	sa, err1 := os.Stat(ra)
	sb, err2 := os.Stat(rb)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// diskAdapter presents a partitions.Disk as the updater's Disk.
type diskAdapter struct {
	d   *partitions.Disk
	esp bootloader.FS
}

func (a diskAdapter) OpenSlot(s bootloader.Slot) (updater.SlotDevice, error) {
	return a.d.OpenPartition(a.d.Slot(s))
}

// OpenSlotDirect opens the slot for direct I/O; the buffered open before
// it is what checks that the partition is not in use.
func (a diskAdapter) OpenSlotDirect(s bootloader.Slot) (updater.SlotDevice, error) {
	p, err := a.d.OpenPartition(a.d.Slot(s))
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.OpenDirect()
}

func (a diskAdapter) SlotPartUUID(s bootloader.Slot) string { return a.d.Slot(s).PartUUID }

func (a diskAdapter) ESP() (bootloader.FS, error) { return a.esp, nil }

// cmdlineRuntime finds the running slot in the kernel command line, where
// every sealift boot entry puts sealift.slot= last, after the release's
// own parameters: the last one is the bootloader's, whatever came before.
type cmdlineRuntime struct{ path string }

func (c cmdlineRuntime) RunningSlot() (bootloader.Slot, error) {
	b, err := os.ReadFile(c.path)
	if err != nil {
		return "", err
	}
	fields := strings.Fields(string(b))
	for i := len(fields) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(fields[i], "sealift.slot="); ok {
			return bootloader.ParseSlot(v)
		}
	}
	return "", fmt.Errorf("%w: no sealift.slot= on the kernel command line (%s)", updater.ErrNoRunningSlot, c.path)
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, partitions.ErrLocked):
		return exitLocked
	case errors.Is(err, updater.ErrVerify):
		return exitVerify
	case errors.Is(err, updater.ErrNoPending), errors.Is(err, updater.ErrNoHold):
		return exitNothing
	case errors.Is(err, updater.ErrBadInput),
		errors.Is(err, partitions.ErrNoGPT),
		errors.Is(err, partitions.ErrMissingSlot),
		errors.Is(err, partitions.ErrDuplicateSlot),
		errors.Is(err, partitions.ErrSlotSizeMismatch),
		errors.Is(err, partitions.ErrMounted),
		errors.Is(err, partitions.ErrHasPartitionTable),
		errors.Is(err, partitions.ErrUnknownDisk),
		errors.Is(err, partitions.ErrTooSmall),
		errors.Is(err, partitions.ErrNotEmpty),
		errors.Is(err, partitions.ErrMisaligned),
		errors.Is(err, bootloader.ErrNotBootable):
		return exitBadInput
	}
	return exitError
}

// agentClient returns a client of the running agent when the command
// works on the running system (no --disk) and an agent answers on its
// socket; nil otherwise.
func (g *globals) agentClient() *agent.Client {
	if g.disk != "" || g.stateDir != "" || g.agentSocket == "" {
		return nil
	}
	c, err := agent.Dial(g.agentSocket)
	if err != nil {
		return nil
	}
	return c
}
