package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"sealift/signing"
	"sealift/updater"
	"sealift/updater/config"
	"sealift/updater/rollout"
)

func init() {
	register(command{"release rollout set", "replace a published release's rollout plan (re-signs and pushes the metadata)", cmdRolloutSet})
	register(command{"release rollout halt", "halt a release's rollout: no node that is not on it takes it", cmdRolloutHalt})
	register(command{"release rollout resume", "resume a halted rollout where it stopped (the rest of the schedule moves later)", cmdRolloutResume})
	register(command{"release rollout show", "print a release's rollout plan and progress, and where a seed stands", cmdRolloutShow})
	register(command{"rollout simulate", "simulate a fleet under a rollout plan: eligible share over time, SVG chart", cmdRolloutSimulate})
}

// publisherNow is the publisher's clock (a variable so tests can pin it).
var publisherNow = time.Now

// planFlags choose a rollout plan on the command line.
type planFlags struct {
	plan, start string
}

func (p *planFlags) add(fs *pflag.FlagSet, planHelp string) {
	fs.StringVar(&p.plan, "plan", "", planHelp)
	fs.StringVar(&p.start, "start", "", "when the rollout starts, RFC 3339 (default: the plan file's start, else now)")
}

// load returns the plan named by --plan ("default" is the built-in plan,
// else a plan file, docs/rollout.md) with its start from --start, else the
// file, else now; nil when --plan was not given.
func (p *planFlags) load(now time.Time) (*rollout.Plan, error) {
	if p.plan == "" {
		if p.start != "" {
			return nil, usageError{"--start needs --plan"}
		}
		return nil, nil
	}
	var plan *rollout.Plan
	if p.plan == "default" {
		d := rollout.Default(time.Time{})
		plan = &d
	} else {
		var err error
		if plan, err = rollout.ParseFile(p.plan); err != nil {
			return nil, fmt.Errorf("%w: %w", updater.ErrBadInput, err)
		}
	}
	// Halts are made with halt and resume, never by a plan file (a
	// JSON one saved from 'show --json' may carry halted_at).
	plan.HaltedAt = time.Time{}
	if p.start != "" {
		t, err := time.Parse(time.RFC3339, p.start)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--start %q: want RFC 3339, e.g. 2026-12-01T09:00:00Z", p.start)}
		}
		plan.Start = t.UTC()
	}
	if plan.Start.IsZero() {
		plan.Start = now.UTC().Truncate(time.Second)
	}
	if err := plan.Validate(); err != nil {
		return nil, fmt.Errorf("%w: plan %s: %w", updater.ErrBadInput, p.plan, err)
	}
	return plan, nil
}

// releaseFlags name one published release in a TUF repository.
type releaseFlags struct {
	tufDir, variant, arch string
}

func (r *releaseFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&r.tufDir, "tuf", "", "TUF repository directory")
	fs.StringVar(&r.variant, "variant", "", "OS variant")
	fs.StringVar(&r.arch, "arch", config.GoArchToOS("amd64"), "architecture")
}

func (r *releaseFlags) open(fs *pflag.FlagSet, cmd string) (*signing.Repo, string, error) {
	if fs.NArg() != 1 || r.tufDir == "" || r.variant == "" {
		return nil, "", usageError{cmd + " needs VERSION, --tuf and --variant"}
	}
	repo, err := signing.OpenRepo(r.tufDir, nil)
	if err != nil {
		return nil, "", err
	}
	return repo, updater.TargetName(r.variant, r.arch, fs.Arg(0)), nil
}

func cmdRolloutSet(g *globals, args []string) error {
	fs := g.flagSet("release rollout set", "release rollout set VERSION --tuf DIR --variant N [--arch A] --plan FILE|default [--start TIME] [--none] (--repository R | --layout DIR)", false)
	var rf releaseFlags
	rf.add(fs)
	var pf planFlags
	pf.add(fs, "plan file (docs/rollout.md), or \"default\" for the built-in plan")
	none := fs.Bool("none", false, "remove the plan: every node may take the release at once")
	var dest registryFlags
	dest.add(fs, "registry repository to push the new metadata to")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if (pf.plan == "") == !*none {
		return usageError{"release rollout set needs --plan FILE or --none"}
	}
	now := publisherNow()
	plan, err := pf.load(now)
	if err != nil {
		return err
	}
	repo, target, err := rf.open(fs, "release rollout set")
	if err != nil {
		return err
	}
	pub, err := dest.publisher()
	if err != nil {
		return err
	}
	m, err := updater.SetRollout(context.Background(), pub, repo, target, plan, now)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "rollout of %s set\n", target)
	describeRollout(g.stdout, m, now)
	return nil
}

func cmdRolloutHalt(g *globals, args []string) error {
	return haltOrResume(g, args, "halt")
}

func cmdRolloutResume(g *globals, args []string) error {
	return haltOrResume(g, args, "resume")
}

func haltOrResume(g *globals, args []string, verb string) error {
	name := "release rollout " + verb
	fs := g.flagSet(name, name+" VERSION --tuf DIR --variant N [--arch A] (--repository R | --layout DIR)", false)
	var rf releaseFlags
	rf.add(fs)
	var dest registryFlags
	dest.add(fs, "registry repository to push the new metadata to")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	repo, target, err := rf.open(fs, name)
	if err != nil {
		return err
	}
	pub, err := dest.publisher()
	if err != nil {
		return err
	}
	now := publisherNow()
	change := updater.HaltRollout
	if verb == "resume" {
		change = updater.ResumeRollout
	}
	m, changed, err := change(context.Background(), pub, repo, target, now)
	if err != nil {
		return err
	}
	switch {
	case !changed && verb == "halt":
		fmt.Fprintf(g.stdout, "%s was halted already (nothing re-signed)\n", target)
	case !changed:
		fmt.Fprintf(g.stdout, "%s is not halted (nothing re-signed)\n", target)
	case verb == "halt":
		fmt.Fprintf(g.stdout, "halted the rollout of %s\n", target)
	default:
		fmt.Fprintf(g.stdout, "resumed the rollout of %s\n", target)
	}
	describeRollout(g.stdout, m, now)
	return nil
}

func cmdRolloutShow(g *globals, args []string) error {
	fs := g.flagSet("release rollout show", "release rollout show VERSION --tuf DIR --variant N [--arch A] [--seed N] [--json]", false)
	var rf releaseFlags
	rf.add(fs)
	seed := fs.Int("seed", -1, "also say where the node with this seed stands")
	asJSON := fs.Bool("json", false, "print the signed metadata (its rollout is a plan file 'release rollout set' reads)")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	repo, target, err := rf.open(fs, "release rollout show")
	if err != nil {
		return err
	}
	m, err := updater.ReleaseInfo(repo, target)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	now := publisherNow()
	fmt.Fprintf(g.stdout, "release %s (%s)\n", m.Version, target)
	describeRollout(g.stdout, m, now)
	if *seed >= 0 {
		if m.Rollout == nil {
			fmt.Fprintf(g.stdout, "seed %d: eligible (no plan)\n", *seed)
			return nil
		}
		e, err := m.Rollout.Eligibility(*seed, now)
		if err != nil {
			return usageError{fmt.Sprintf("--seed: %v", err)}
		}
		fmt.Fprintf(g.stdout, "seed %d: %s\n", *seed, e)
	}
	return nil
}

// describeRollout prints a release's plan, wave by wave, and how far it
// has come at now.
func describeRollout(w io.Writer, m *updater.ReleaseMeta, now time.Time) {
	if m.Recalled {
		fmt.Fprintln(w, "recalled: no node takes it; nodes on it move off it")
	}
	p := m.Rollout
	if p == nil {
		fmt.Fprintln(w, "rollout: none (every node may take it at once)")
		return
	}
	fmt.Fprintf(w, "rollout: %d waves from %s\n", len(p.Waves), stampUTC(p.Start))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  wave\tafter\tuntil\tfleet\tseeds")
	for i, wv := range p.Waves {
		lo, hi := p.WaveSeeds(i)
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d%%\t%d-%d\n", i+1, rollout.FormatDuration(wv.After), stampUTC(p.Start.Add(wv.After)), wv.Percent, lo, hi-1)
	}
	tw.Flush()
	if _, hi := p.WaveSeeds(len(p.Waves) - 1); hi < rollout.Seeds {
		fmt.Fprintf(w, "seeds %d-%d are beyond the last wave: not eligible until the plan changes\n", hi, rollout.Seeds-1)
	}
	if p.Halted() {
		fmt.Fprintf(w, "halted since %s with %.1f%% of the fleet eligible; resume continues from there (the rest of the schedule moves later by the time spent halted)\n",
			stampUTC(p.HaltedAt), 100*p.Fraction(p.HaltedAt))
		return
	}
	fmt.Fprintf(w, "now: %.1f%% of the fleet eligible\n", 100*p.Fraction(now))
}

func stampUTC(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func cmdRolloutSimulate(g *globals, args []string) error {
	fs := g.flagSet("rollout simulate", "rollout simulate --plan FILE|default [--nodes N] [--out CHART.svg] [--seed S]", false)
	var pf planFlags
	fs.StringVar(&pf.plan, "plan", "default", "plan file (docs/rollout.md), or \"default\" for the built-in plan")
	nodes := fs.Int("nodes", 10000, "simulated fleet size")
	out := fs.String("out", "", "write an SVG chart of the eligible share over time")
	randSeed := fs.Uint64("seed", 1, "random seed of the simulated fleet (the same seed gives the same fleet)")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{"rollout simulate takes no arguments"}
	}
	plan, err := pf.load(publisherNow())
	if err != nil {
		return err
	}
	sim, err := rollout.Simulate(*plan, *nodes, *randSeed)
	if err != nil {
		return usageError{fmt.Sprintf("--nodes: %v", err)}
	}
	last := plan.Waves[len(plan.Waves)-1]
	fmt.Fprintf(g.stdout, "plan: %d waves, the last at %s (%d%%); %d simulated nodes, random seed %d\n",
		len(plan.Waves), rollout.FormatDuration(last.After), last.Percent, *nodes, *randSeed)
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time\tpoint\tplan\tseed share\tsimulated\t")
	for _, pt := range sim.Points() {
		planned := ""
		if pt.Percent > 0 {
			planned = fmt.Sprintf("%d%%", pt.Percent)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f%%\t%.2f%%\t\n", rollout.FormatDuration(pt.After), pt.Label, planned, 100*pt.Expected, 100*pt.Eligible)
	}
	tw.Flush()
	if *out != "" {
		var b strings.Builder
		if err := sim.WriteSVG(&b); err != nil {
			return err
		}
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "chart: %s\n", *out)
	}
	return nil
}

// ensureSeed draws this node's rollout seed for a read-only node session
// (check, the agent's checks) when it has none yet: the seed is kept on
// the disk's ESP, so drawing it takes a short writable session (and the
// disk lock), once per node.
func ensureSeed(g *globals, nd *node) error {
	if nd.cfg.Node.Seed != nil {
		return nil
	}
	st, err := nd.s.up.State.Load()
	if err != nil || st.Seed != nil {
		return err
	}
	w, err := g.open(true)
	if err != nil {
		return fmt.Errorf("draw this node's rollout seed: %w", err)
	}
	defer w.Close()
	_, _, err = w.up.NodeSeed(nil)
	return err
}

// printRollout adds the node's seed and rollout position to check's output.
func printRollout(w io.Writer, res *updater.CheckResult) {
	from := map[string]string{
		updater.SeedFromConfig: "node.seed in the config",
		updater.SeedFromState:  "kept in the state",
		updater.SeedFromNew:    "drawn now, kept in the state",
	}[res.SeedFrom]
	fmt.Fprintf(w, "seed:     %d (%s)\n", res.Seed, from)
	if res.Rollout != nil && res.Newest != nil {
		fmt.Fprintf(w, "rollout:  %s: %s\n", res.Newest.Meta.Version, res.Rollout)
	}
}
