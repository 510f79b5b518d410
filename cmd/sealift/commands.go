package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"sealift/bootloader"
	"sealift/bootloader/gptprio"
	"sealift/bootloader/grubenv"
	"sealift/bootloader/sdboot"
	"sealift/partitions"
	"sealift/updater"
	"sealift/updater/agent"
	"sealift/updater/state"
)

func init() {
	register(command{"disk init", "create the A/B layout on a new image file or a block device", cmdDiskInit})
	register(command{"status", "show slots, versions, running slot, next boot and pending update", cmdStatus})
	register(command{"install", "write a local root image into the inactive slot and flip to it", cmdInstall})
	register(command{"mark-good", "mark the running slot successful (keeps it)", cmdMarkGood})
	register(command{"mark-bad", "mark the running slot failed (next boot falls back)", cmdMarkBad})
	register(command{"rollback", "boot the other, previously good slot next", cmdRollback})
	register(command{"cancel", "undo a staged update that has not been booted", cmdCancel})
	register(command{"boot-check", "at boot: detect a fallback from a new slot, record why, never retry that release", cmdBootCheck})
	register(command{"retry", "allow a release that failed on this node to be installed again", cmdRetry})
	register(command{"events", "show the node's history: installs, boots, health verdicts, rollbacks, agent actions", cmdEvents})
	register(command{"boot simulate", "show (or, on an image, apply) what the bootloader does at the next boot", cmdBootSimulate})
}

func cmdDiskInit(g *globals, args []string) error {
	fs := g.flagSet("disk init", "disk init PATH [--size SIZE] [flags]", false)
	size := fs.String("size", "", "size of a new image file (e.g. 4G); not used for a block device")
	def := partitions.DefaultLayout()
	esp := fs.String("esp-size", formatSize(def.ESPSize), "ESP size")
	root := fs.String("root-size", formatSize(def.RootSize), "size of each root slot")
	st := fs.String("state-size", "", "STATE size (default: the rest of the disk)")
	backend := fs.String("boot-backend", "grubenv", "boot flag backend: gptprio, grubenv or sdboot (recorded on the disk)")
	force := fs.Bool("force", false, "overwrite an existing partition table")
	efi := fs.String("efi-binary", "", "EFI bootloader to install as EFI/BOOT/BOOTX64.EFI (e.g. a standalone GRUB whose embedded config loads EFI/sealift/grub.cfg, or systemd-bootx64.efi)")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"disk init takes exactly one PATH"}
	}
	path := fs.Arg(0)
	var o partitions.CreateOptions
	var err error
	if o.Size, err = parseSizeFlag("size", *size, true); err != nil {
		return err
	}
	if o.Layout.ESPSize, err = parseSizeFlag("esp-size", *esp, false); err != nil {
		return err
	}
	if o.Layout.RootSize, err = parseSizeFlag("root-size", *root, false); err != nil {
		return err
	}
	if o.Layout.StateSize, err = parseSizeFlag("state-size", *st, true); err != nil {
		return err
	}
	o.Force = *force
	switch *backend {
	case "gptprio", "grubenv", "sdboot":
	default:
		return usageError{fmt.Sprintf("--boot-backend %q: want gptprio, grubenv or sdboot", *backend)}
	}
	var efiBin []byte
	if *efi != "" {
		var err error
		if efiBin, err = readInput("EFI binary", *efi); err != nil {
			return err
		}
	}
	if err := partitions.Create(path, o); err != nil {
		return err
	}
	d, err := partitions.Open(path, true)
	if err != nil {
		return err
	}
	defer d.Close()
	unlock, err := d.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	espfs, err := d.ESPFS()
	if err != nil {
		return err
	}
	empty := bootloader.Flags{bootloader.SlotA: {}, bootloader.SlotB: {}}
	switch *backend {
	case "gptprio":
		err = gptprio.New(d).Save(empty)
	case "grubenv":
		err = grubenv.Install(espfs, empty)
	case "sdboot":
		err = sdboot.Install(espfs, empty)
	}
	if err != nil {
		return fmt.Errorf("set up %s boot backend: %w", *backend, err)
	}
	if efiBin != nil {
		if err := espfs.MkdirAll("EFI/BOOT"); err != nil {
			return err
		}
		if err := espfs.WriteFile("EFI/BOOT/BOOTX64.EFI", efiBin); err != nil {
			return fmt.Errorf("install EFI binary: %w", err)
		}
	}
	if err := bootloader.RecordBackend(espfs, *backend); err != nil {
		return fmt.Errorf("record boot backend: %w", err)
	}
	g.log.WithFields(map[string]any{"disk": path, "boot_backend": *backend}).Info("disk initialised")
	fmt.Fprintf(g.stdout, "created A/B layout on %s (boot backend %s)\n", path, *backend)
	return nil
}

func cmdStatus(g *globals, args []string) error {
	fs := g.flagSet("status", "status [--disk DISK] [--json]", true)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if c := g.agentClient(); c != nil {
		r, err := c.Status(context.Background())
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		}
		printStatus(g.stdout, "(the running system's, through the agent)", r.Node)
		l := r.Agent.Last
		fmt.Fprintln(g.stdout, agentLine(l, string(r.Agent.Reboot), r.Agent.Interval))
		if l.Err != "" {
			fmt.Fprintf(g.stdout, "agent:     last step failed: %s\n", l.Err)
		}
		return nil
	}
	s, err := g.open(false)
	if err != nil {
		return err
	}
	defer s.Close()
	st, err := s.up.Status()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Disk string `json:"disk"`
			*updater.Status
		}{s.disk.Path(), st})
	}
	printStatus(g.stdout, s.disk.Path(), st)
	return nil
}

func cmdEvents(g *globals, args []string) error {
	fs := g.flagSet("events", "events [--disk DISK] [--since SEQ] [--last N] [--json]", true)
	asJSON := fs.Bool("json", false, "print JSON, one event per line")
	since := fs.Uint64("since", 0, "only events numbered after SEQ")
	last := fs.Int("last", 0, "only the newest N events (0: all that are kept)")
	var err error
	if err = g.parse(fs, args); err != nil {
		return err
	}
	var evs []state.Event
	if c := g.agentClient(); c != nil {
		if evs, err = c.Events(context.Background(), *since); err != nil {
			return err
		}
	} else {
		s, err := g.open(false)
		if err != nil {
			return err
		}
		defer s.Close()
		if evs, err = s.up.Events(*since); err != nil {
			return err
		}
	}
	if *last > 0 && len(evs) > *last {
		evs = evs[len(evs)-*last:]
	}
	printEvents(g.stdout, evs, *asJSON)
	return nil
}

func printEvents(w io.Writer, evs []state.Event, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, e := range evs {
			_ = enc.Encode(e)
		}
		return
	}
	for _, e := range evs {
		rep := ""
		if e.Repeats > 0 {
			rep = fmt.Sprintf(" (x%d)", e.Repeats+1)
		}
		fmt.Fprintf(w, "%4d  %s  %-14s %s%s\n", e.Seq, e.At.Format(time.RFC3339), e.Kind, e.Message, rep)
	}
}

func printStatus(w io.Writer, disk string, st *updater.Status) {
	fmt.Fprintf(w, "disk:      %s (boot backend %s)\n", disk, st.Backend)
	switch {
	case st.Running == "":
		fmt.Fprintln(w, "running:   none (image not booted yet)")
	case st.Simulated:
		fmt.Fprintf(w, "running:   %s (last boot of this image)\n", st.Running)
	default:
		fmt.Fprintf(w, "running:   %s\n", st.Running)
	}
	fmt.Fprintf(w, "%s\n", st.NextBoot)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tVERSION\tSTATE\tPRIO\tTRIES\tVERITY ROOT\tINSTALLED")
	for _, sl := range st.Slots {
		ver, root, at := "-", "-", "-"
		if r := sl.Record; r != nil {
			ver, root, at = r.Version, short(r.Verity.RootHash), r.InstalledAt.Format(time.RFC3339)
		}
		state := "unbootable"
		switch {
		case sl.Flags.Successful:
			state = "good"
		case sl.Bootable:
			state = "trial"
		}
		if sl.Running {
			state += ",running"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", sl.Slot, ver, state, sl.Flags.Priority, sl.Flags.Tries, root, at)
	}
	tw.Flush()
	if p := st.Pending; p != nil {
		fmt.Fprintf(w, "pending:   %s into slot %s (%s since %s)\n", p.Version, p.Slot, p.Phase, p.UpdatedAt.Format(time.RFC3339))
	}
	if l := st.Last; l != nil {
		msg := fmt.Sprintf("last:      %s %s in slot %s at %s", l.Result, l.Version, l.Slot, l.At.Format(time.RFC3339))
		if l.Reason != "" {
			msg += ": " + l.Reason
		}
		fmt.Fprintln(w, msg)
	}
	for _, v := range sortedKeys(st.Failed) {
		f := st.Failed[v]
		fmt.Fprintf(w, "failed:    %s in slot %s at %s: %s (not retried)\n", v, f.Slot, f.At.Format(time.RFC3339), f.Reason)
	}
	printHolds(w, "hold:      ", st.Holds)
	if l := st.FleetLock; l != nil {
		fmt.Fprintf(w, "fleetlock: held for group %s since %s (rebooting into %s in slot %s; released once it is judged)\n",
			l.Group, l.Since.Format(time.RFC3339), l.Version, l.Slot)
	}
	for _, n := range st.Notes {
		fmt.Fprintf(w, "note:      %s\n", n)
	}
	if len(st.Recent) > 0 {
		fmt.Fprintln(w, "recent events ('sealift events' has the rest):")
		printEvents(w, st.Recent, false)
	}
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

func cmdInstall(g *globals, args []string) error {
	fs := g.flagSet("install", "install --image ROOT.img --kernel F [--initrd F] [--cmdline S] --version V [flags]", true)
	image := fs.String("image", "", "root filesystem image (size a multiple of 4096)")
	kernel := fs.String("kernel", "", "kernel image for the slot")
	initrd := fs.String("initrd", "", "initramfs for the slot (optional)")
	cmdline := fs.String("cmdline", "", "kernel command line (sealift appends slot and verity parameters)")
	ver := fs.String("version", "", "version of this release")
	tries := fs.Int("tries", bootloader.DefaultTries, "boots the new slot gets before falling back")
	salt := fs.String("salt", "", "verity salt, hex (default: random)")
	rootHash := fs.String("root-hash", "", "expected verity root hash, hex: refuse to flip if the slot differs")
	digest := fs.String("image-digest", "", "expected sha256:HEX of the image: checked while streaming, refuse to flip on mismatch")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if *image == "" || *ver == "" || *kernel == "" {
		return usageError{"install needs --image, --kernel and --version"}
	}
	// The library reads 0 as "the default"; from the command line it is a
	// mistake, refused like 16 (and like tries = 0 in the config).
	if *tries < 1 || *tries > bootloader.MaxTries {
		return fmt.Errorf("%w: --tries %d: want 1-%d boots", updater.ErrBadInput, *tries, bootloader.MaxTries)
	}
	req := updater.InstallRequest{Version: *ver, Tries: *tries, ImageDigest: *digest}
	var err error
	if *salt != "" {
		if req.Salt, err = hex.DecodeString(*salt); err != nil {
			return usageError{fmt.Sprintf("--salt: %v", err)}
		}
	}
	if *rootHash != "" {
		if req.ExpectedRoot, err = hex.DecodeString(*rootHash); err != nil {
			return usageError{fmt.Sprintf("--root-hash: %v", err)}
		}
	}
	// Read every input before the disk is touched: a missing kernel must
	// not leave a cleared slot behind.
	if req.Boot.Kernel, err = readInput("kernel", *kernel); err != nil {
		return err
	}
	req.KernelName = "kernel " + *kernel
	if *initrd != "" {
		if req.Boot.Initrd, err = readInput("initrd", *initrd); err != nil {
			return err
		}
	}
	req.Boot.Cmdline = *cmdline
	f, err := os.Open(*image)
	if err != nil {
		return fmt.Errorf("%w: image: %v", updater.ErrBadInput, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: image %s is not a regular file", updater.ErrBadInput, *image)
	}
	req.Image, req.ImageSize = f, fi.Size()

	s, err := g.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, finish := g.progress("installing " + *ver)
	req.Progress = report
	start := time.Now()
	res, err := s.up.Install(ctx, req)
	finish()
	if err != nil {
		return err
	}
	g.log.WithFields(map[string]any{
		"slot": res.Slot, "version": res.Record.Version, "bytes": res.Record.ImageSize,
		"seconds": fmt.Sprintf("%.2f", time.Since(start).Seconds()), "verity_root": res.Record.Verity.RootHash,
		"direct_io": res.DirectIO,
	}).Info("installed")
	for _, t := range res.Timings {
		g.log.WithFields(map[string]any{"phase": t.Phase, "seconds": fmt.Sprintf("%.3f", t.Duration.Seconds())}).Debug("install phase")
	}
	fmt.Fprintf(g.stdout, "installed %s into slot %s; %s\n", res.Record.Version, res.Slot, res.Next)
	return nil
}

func readInput(what, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", updater.ErrBadInput, what, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: %s %s is empty", updater.ErrBadInput, what, path)
	}
	return b, nil
}

// onDisk parses a disk command's flags, opens the disk for writing and
// runs op on its updater.
func onDisk(g *globals, args []string, name, usage string, extra func(*pflag.FlagSet), op func(*updater.Updater) (string, error), positional ...func(*pflag.FlagSet) error) error {
	fs := g.flagSet(name, usage, true)
	if extra != nil {
		extra(fs)
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	for _, p := range positional {
		if err := p(fs); err != nil {
			return err
		}
	}
	if len(positional) == 0 && fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s takes no arguments, got %q", name, fs.Args())}
	}
	var via func(*agent.Client) (string, error)
	if v, ok := agentOps[name]; ok {
		via = func(c *agent.Client) (string, error) { return v(c, actor(fs)) }
	}
	return agentOrDisk(g, via, op)
}

// agentOrDisk runs a command through the running agent when via is set
// and an agent answers (it owns the disk: ask it rather than race it),
// else on the disk opened for writing, and prints what the command says.
func agentOrDisk(g *globals, via func(*agent.Client) (string, error), op func(*updater.Updater) (string, error)) error {
	msg, err := func() (string, error) {
		if via != nil {
			if c := g.agentClient(); c != nil {
				return via(c)
			}
		}
		s, err := g.open(true)
		if err != nil {
			return "", err
		}
		defer s.Close()
		return op(s.up)
	}()
	if err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, msg)
	return nil
}

// agentOps are the disk commands a running agent carries out for the CLI.
var agentOps = map[string]func(c *agent.Client, a updater.Actor) (string, error){
	"cancel": func(c *agent.Client, a updater.Actor) (string, error) {
		r, err := c.Cancel(context.Background(), a)
		if err != nil {
			return "", err
		}
		return cancelMessage(r, " (through the agent)"), nil
	},
	"rollback": func(c *agent.Client, a updater.Actor) (string, error) {
		r, err := c.Rollback(context.Background(), a)
		if err != nil {
			return "", err
		}
		return rollbackMessage(r, ", through the agent"), nil
	},
}

func cancelMessage(r *updater.CancelResult, via string) string {
	msg := fmt.Sprintf("cancelled the update to %s in slot %s%s", r.Version, r.Slot, via)
	if h := r.Skip; h != nil {
		msg += fmt.Sprintf("; %s is skipped from now on, so the agent does not stage it again ('%s' allows it)", h.Version, h.ClearCommand())
	}
	return msg
}

func rollbackMessage(r *updater.RollbackResult, via string) string {
	msg := fmt.Sprintf("next boot: %s (rollback%s)", r.To, via)
	if h := r.Skip; h != nil {
		msg += fmt.Sprintf("; %s, rolled back from, is skipped from now on, so the agent does not take it again ('%s' allows it)", h.Version, h.ClearCommand())
	}
	return msg
}

func cmdMarkGood(g *globals, args []string) error {
	return onDisk(g, args, "mark-good", "mark-good [--disk DISK]", nil, func(u *updater.Updater) (string, error) {
		slot, err := u.MarkGood()
		return fmt.Sprintf("slot %s marked good", slot), err
	})
}

func cmdMarkBad(g *globals, args []string) error {
	var reason *string
	return onDisk(g, args, "mark-bad", "mark-bad [--disk DISK] [--reason TEXT]",
		func(fs *pflag.FlagSet) {
			reason = fs.String("reason", "marked bad by operator", "why, recorded in status")
		},
		func(u *updater.Updater) (string, error) {
			slot, err := u.MarkBad(*reason)
			return fmt.Sprintf("slot %s marked bad; the next boot falls back to %s", slot, slot.Other()), err
		})
}

func cmdRollback(g *globals, args []string) error {
	var fs *pflag.FlagSet
	return onDisk(g, args, "rollback", "rollback [--disk DISK] [--reason TEXT]",
		func(f *pflag.FlagSet) {
			fs = f
			f.String("reason", "", "why, recorded with the rollback and the skip of the release rolled back from")
		},
		func(u *updater.Updater) (string, error) {
			r, err := u.Rollback(actor(fs))
			if err != nil {
				return "", err
			}
			return rollbackMessage(r, ""), nil
		})
}

func cmdCancel(g *globals, args []string) error {
	var fs *pflag.FlagSet
	return onDisk(g, args, "cancel", "cancel [--disk DISK] [--reason TEXT]",
		func(f *pflag.FlagSet) {
			fs = f
			f.String("reason", "", "why, recorded with the cancel and the skip of the release")
		},
		func(u *updater.Updater) (string, error) {
			r, err := u.Cancel(actor(fs))
			if err != nil {
				return "", err
			}
			return cancelMessage(r, ""), nil
		})
}

func cmdBootSimulate(g *globals, args []string) error {
	fs := g.flagSet("boot simulate", "boot simulate [--disk DISK] [--apply] [--json]", true)
	apply := fs.Bool("apply", false, "write what the bootloader leaves behind and record the boot (disk images only)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	s, err := g.open(*apply)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := s.up.SimulateBoot(*apply)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(g.stdout).Encode(d)
	}
	if *apply && d.Slot != "" {
		fmt.Fprintf(g.stdout, "booted %s", d.Slot)
		if d.Trial {
			fmt.Fprintf(g.stdout, " (trial, %d %s left)", d.TriesLeft, map[bool]string{true: "try", false: "tries"}[d.TriesLeft == 1])
		}
		fmt.Fprintln(g.stdout)
		return nil
	}
	fmt.Fprintln(g.stdout, d)
	return nil
}

// parseSizeFlag parses sizes like 4096, 512M, 4G, 1GiB (binary units).
func parseSizeFlag(name, v string, zeroOK bool) (int64, error) {
	if v == "" {
		if zeroOK {
			return 0, nil
		}
		return 0, usageError{fmt.Sprintf("--%s is required", name)}
	}
	n, err := parseSize(v)
	if err != nil {
		return 0, usageError{fmt.Sprintf("--%s: %v", name, err)}
	}
	return n, nil
}

func parseSize(v string) (int64, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(v)), "IB"), "B")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (use e.g. 512M, 4G)", v)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q too large", v)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return strconv.FormatInt(n, 10)
}

func cmdBootCheck(g *globals, args []string) error {
	var asJSON *bool
	return onDisk(g, args, "boot-check", "boot-check [--disk DISK] [--json]",
		func(fs *pflag.FlagSet) { asJSON = fs.Bool("json", false, "print JSON") },
		func(u *updater.Updater) (string, error) {
			bc, err := u.BootCheck()
			if err != nil {
				return "", err
			}
			if *asJSON {
				b, err := json.Marshal(bc)
				return string(b), err
			}
			switch bc.Result {
			case "rolled-back":
				g.log.WithFields(map[string]any{"version": bc.Outcome.Version, "slot": bc.Outcome.Slot, "cause": bc.Outcome.Reason}).Warn("update rolled back")
				return fmt.Sprintf("running %s: the update to %s in slot %s fell back: %s", bc.Running, bc.Outcome.Version, bc.Outcome.Slot, bc.Outcome.Reason), nil
			case "trial":
				return fmt.Sprintf("running %s on trial: the health check decides", bc.Running), nil
			case "interrupted":
				return fmt.Sprintf("running %s; an update was interrupted while writing (see status)", bc.Running), nil
			}
			return fmt.Sprintf("running %s; no update pending", bc.Running), nil
		})
}

func cmdRetry(g *globals, args []string) error {
	var ver string
	return onDisk(g, args, "retry", "retry VERSION [--disk DISK]", nil, func(u *updater.Updater) (string, error) {
		return fmt.Sprintf("%s may be installed again", ver), u.ClearFailed(ver)
	}, func(fs *pflag.FlagSet) error {
		if fs.NArg() != 1 {
			return usageError{"retry takes exactly one VERSION"}
		}
		ver = fs.Arg(0)
		return nil
	})
}

// agentLine is status's line on the agent's latest step.
func agentLine(l agent.StepInfo, reboot, interval string) string {
	if l.At.IsZero() {
		// Asked while its first step runs (it starts with one).
		return fmt.Sprintf("agent:     taking its first step (reboot strategy %s, checks every %s)", reboot, interval)
	}
	return fmt.Sprintf("agent:     %s (reboot strategy %s, checks every %s); next step %s",
		l.Detail, reboot, interval, l.Next.Format(time.RFC3339))
}
