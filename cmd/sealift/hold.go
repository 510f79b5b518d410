package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"sealift/updater"
	"sealift/updater/agent"
	"sealift/updater/state"
)

func init() {
	register(command{"hold skip", "never take VERSION; other releases, newer or older, are taken as usual", cmdHoldSkip})
	register(command{"hold pin", "take no release other than VERSION", cmdHoldPin})
	register(command{"hold pause", "take nothing: no check, download or reboot by the agent, until cleared or --until", cmdHoldPause})
	register(command{"hold clear", "lift a hold: skip VERSION, pin, pause, or --all", cmdHoldClear})
	register(command{"hold list", "show the operator's holds in force: who set them, when and why", cmdHoldList})
}

// operator names who runs the command, recorded with the holds it sets:
// the user sudo runs it for, else the user running it.
func operator() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(os.Getuid())
}

// actor is who runs a disk command and why (its --reason, when it has one).
func actor(fs *pflag.FlagSet) updater.Actor {
	reason, _ := fs.GetString("reason")
	return updater.Actor{By: operator(), Reason: reason}
}

// holdCommand parses a hold command's flags and runs it through the
// running agent when one answers (waiting while it changes the disk;
// Ctrl-C gives up), else on the disk.
func holdCommand(g *globals, args []string, name, usage string, extra func(*pflag.FlagSet), positional func(*pflag.FlagSet) error,
	viaAgent func(context.Context, *agent.Client) (string, error), onDisk func(*updater.Updater) (string, error)) error {
	fs := g.flagSet(name, usage, true)
	if extra != nil {
		extra(fs)
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if err := positional(fs); err != nil {
		return err
	}
	return agentOrDisk(g, func(c *agent.Client) (string, error) {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return viaAgent(ctx, c)
	}, onDisk)
}

// setHold is hold skip, pin and pause.
func setHold(g *globals, args []string, kind state.HoldKind, usage string, withVersion bool) error {
	req := updater.HoldRequest{Kind: kind}
	var reason, until *string
	name := "hold " + string(kind)
	extra := func(fs *pflag.FlagSet) {
		reason = fs.String("reason", "", "why, recorded with the hold and shown wherever it is")
		if kind == state.HoldPause {
			until = fs.String("until", "", "end the pause by itself at this time (RFC 3339) or after this long (90m, 36h, 7d); default: until cleared")
		}
	}
	positional := func(fs *pflag.FlagSet) error {
		switch {
		case withVersion && fs.NArg() != 1:
			return usageError{fmt.Sprintf("%s takes exactly one VERSION", name)}
		case !withVersion && fs.NArg() != 0:
			return usageError{fmt.Sprintf("%s takes no arguments, got %q", name, fs.Args())}
		}
		if withVersion {
			req.Version = fs.Arg(0)
		}
		req.Actor = updater.Actor{By: operator(), Reason: *reason}
		if until != nil && *until != "" {
			t, err := parseUntil(*until, time.Now())
			if err != nil {
				return usageError{fmt.Sprintf("--until: %v", err)}
			}
			req.Until = t
		}
		return nil
	}
	return holdCommand(g, args, name, usage, extra, positional,
		func(ctx context.Context, c *agent.Client) (string, error) {
			ch, err := c.SetHold(ctx, req)
			if err != nil {
				return "", err
			}
			return holdSetMessage(ch, " (through the agent)"), nil
		},
		func(u *updater.Updater) (string, error) {
			ch, err := u.SetHold(req)
			if err != nil {
				return "", err
			}
			return holdSetMessage(ch, ""), nil
		})
}

func holdSetMessage(ch *updater.HoldChange, via string) string {
	h := ch.Hold
	msg := fmt.Sprintf("hold %s set by %s%s: %s", h.Name(), h.Who(), via, h.Effect())
	if r := ch.Replaced; r != nil {
		msg += fmt.Sprintf("\nit replaces the hold %s (%s)", r.Name(), r.Origin())
	}
	if ch.Note != "" {
		msg += "\nnote: " + ch.Note
	}
	return msg
}

// parseUntil reads --until: an RFC 3339 time, or how long from now (a Go
// duration such as 90m or 36h, or whole days such as 7d).
func parseUntil(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 {
			return now.AddDate(0, 0, n), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a positive duration (90m, 36h, 7d)", v)
}

func cmdHoldSkip(g *globals, args []string) error {
	return setHold(g, args, state.HoldSkip, "hold skip VERSION [--reason TEXT] [--disk DISK]", true)
}

func cmdHoldPin(g *globals, args []string) error {
	return setHold(g, args, state.HoldPin, "hold pin VERSION [--reason TEXT] [--disk DISK]", true)
}

func cmdHoldPause(g *globals, args []string) error {
	return setHold(g, args, state.HoldPause, "hold pause [--until TIME|DURATION] [--reason TEXT] [--disk DISK]", false)
}

func cmdHoldClear(g *globals, args []string) error {
	var all *bool
	var kind state.HoldKind
	var version string
	return holdCommand(g, args, "hold clear", "hold clear (skip VERSION | pin | pause | --all) [--disk DISK]",
		func(fs *pflag.FlagSet) { all = fs.Bool("all", false, "lift every hold") },
		func(fs *pflag.FlagSet) error {
			a := fs.Args()
			switch {
			case *all && len(a) == 0:
				return nil
			case *all:
				return usageError{"hold clear --all takes no other arguments"}
			case len(a) == 2 && a[0] == string(state.HoldSkip):
				kind, version = state.HoldSkip, a[1]
			case len(a) == 1 && (a[0] == string(state.HoldPin) || a[0] == string(state.HoldPause)):
				kind = state.HoldKind(a[0])
			default:
				return usageError{fmt.Sprintf("hold clear takes skip VERSION, pin, pause or --all; got %q", a)}
			}
			return nil
		},
		func(ctx context.Context, c *agent.Client) (string, error) {
			gone, err := c.ClearHolds(ctx, kind, version, updater.Actor{By: operator()})
			return holdsClearedMessage(gone, " (through the agent)"), err
		},
		func(u *updater.Updater) (string, error) {
			gone, err := u.ClearHolds(kind, version, updater.Actor{By: operator()})
			return holdsClearedMessage(gone, ""), err
		})
}

func holdsClearedMessage(gone []state.Hold, via string) string {
	var lines []string
	for _, h := range gone {
		lines = append(lines, fmt.Sprintf("cleared hold %s%s (%s)", h.Name(), via, h.Origin()))
	}
	return strings.Join(lines, "\n")
}

func cmdHoldList(g *globals, args []string) error {
	fs := g.flagSet("hold list", "hold list [--disk DISK] [--json]", true)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("hold list takes no arguments, got %q", fs.Args())}
	}
	var hs []state.Hold
	var err error
	if c := g.agentClient(); c != nil {
		hs, err = c.Holds(context.Background())
	} else {
		var s *session
		if s, err = g.open(false); err != nil {
			return err
		}
		defer s.Close()
		hs, err = s.up.Holds()
	}
	if err != nil {
		return err
	}
	if *asJSON {
		if hs == nil {
			hs = []state.Hold{}
		}
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(hs)
	}
	if len(hs) == 0 {
		fmt.Fprintln(g.stdout, "no holds: the node takes releases as usual")
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOLD\tUNTIL\tSINCE\tBY\tREASON\tLIFTED BY")
	for _, h := range hs {
		until := "-"
		if !h.Until.IsZero() {
			until = h.Until.UTC().Format(time.RFC3339)
		}
		name := string(h.Kind)
		if h.Version != "" {
			name += " " + h.Version
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, until, h.Since.UTC().Format(time.RFC3339), h.Who(), dash(h.Reason), h.ClearCommand())
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printHolds prints the holds in force, one a line, for status and check.
func printHolds(w io.Writer, label string, hs []state.Hold) {
	for _, h := range hs {
		fmt.Fprintf(w, "%s%s, %s ('%s' lifts it)\n", label, h.Name(), h.Origin(), h.ClearCommand())
	}
}
