package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"sealift/signing"
	"sealift/updater"
	"sealift/updater/config"
	"sealift/updater/oci"
	"sealift/updater/release"
)

func init() {
	register(command{"release build", "build a release (chunked root image, kernel, initrd, verity) into an OCI layout", cmdReleaseBuild})
	register(command{"release publish", "push a built release and sign it into the TUF repository", cmdReleasePublish})
	register(command{"release recall", "mark a published release recalled (nodes never take it; nodes on it move off it)", cmdReleaseRecall})
	register(command{"check", "refresh signed metadata and say which release this node may take", cmdCheck})
	register(command{"update", "download, verify and install the newest release into the inactive slot", cmdUpdate})
}

func cmdReleaseBuild(g *globals, args []string) error {
	fs := g.flagSet("release build", "release build ROOT.img --kernel F [--initrd F] [--cmdline S] --version V --variant N [--arch A] --out LAYOUT", false)
	kernel := fs.String("kernel", "", "kernel image")
	initrd := fs.String("initrd", "", "initramfs (optional)")
	cmdline := fs.String("cmdline", "", "kernel command line of the release")
	ver := fs.String("version", "", "release version")
	variant := fs.String("variant", "", "OS variant (e.g. k8s-1.31)")
	arch := fs.String("arch", config.GoArchToOS("amd64"), "architecture")
	out := fs.String("out", "", "OCI image layout directory to write (created or appended to)")
	chunk := fs.String("chunk-size", "32M", "uncompressed chunk size")
	salt := fs.String("salt", "", "verity salt, hex (default: random)")
	level := fs.Int("zstd-level", 3, "zstd level 1-22")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *kernel == "" || *ver == "" || *variant == "" || *out == "" {
		return usageError{"release build needs ROOT.img, --kernel, --version, --variant and --out"}
	}
	cs, err := parseSizeFlag("chunk-size", *chunk, false)
	if err != nil {
		return err
	}
	o := release.BuildOptions{RootImage: fs.Arg(0), Kernel: *kernel, Initrd: *initrd, Cmdline: *cmdline,
		Version: *ver, Variant: *variant, Arch: *arch, ChunkSize: cs, ZstdLevel: *level}
	if *salt != "" {
		if o.Salt, err = hex.DecodeString(*salt); err != nil {
			return usageError{fmt.Sprintf("--salt: %v", err)}
		}
	}
	start := time.Now()
	img, cfg, err := release.Build(o)
	if err != nil {
		return fmt.Errorf("%w: %v", updater.ErrBadInput, err)
	}
	pub, err := oci.NewLayoutPublisher(*out)
	if err != nil {
		return err
	}
	digest, _, err := pub.PushImage(context.Background(), img, cfg.Version)
	if err != nil {
		return err
	}
	g.log.WithFields(map[string]any{"seconds": fmt.Sprintf("%.2f", time.Since(start).Seconds())}).Debug("built")
	fmt.Fprintf(g.stdout, "built %s (%s/%s) into %s\nmanifest:    %s\nverity root: %s\n", cfg.Version, cfg.Variant, cfg.Arch, *out, digest, cfg.Root.Verity.RootHash)
	return nil
}

func cmdReleasePublish(g *globals, args []string) error {
	fs := g.flagSet("release publish", "release publish --tuf DIR --from LAYOUT --version V [--plan FILE|default [--start TIME]] [--replace] (--repository R | --layout DIR)", false)
	tufDir := fs.String("tuf", "", "TUF repository directory (sealift repo init)")
	from := fs.String("from", "", "OCI layout written by 'release build'")
	ver := fs.String("version", "", "version (tag) of the release in --from")
	replace := fs.Bool("replace", false, "publish even if the version is already published with other bytes; nodes already on that version keep the old bytes (docs/publishing.md)")
	var pf planFlags
	pf.add(fs, "rollout plan file (docs/rollout.md), or \"default\"; without it every node may take the release at once")
	var dest registryFlags
	dest.add(fs, "registry repository to publish to, e.g. registry.example.com/os/node")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if *tufDir == "" || *from == "" || *ver == "" {
		return usageError{"release publish needs --tuf, --from and --version"}
	}
	plan, err := pf.load(publisherNow())
	if err != nil {
		return err
	}
	img, err := imageFromLayout(*from, *ver)
	if err != nil {
		return err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cfg, err := release.ParseConfig(raw)
	if err != nil {
		return fmt.Errorf("%w: %s in %s is not a sealift release: %v", updater.ErrBadInput, *ver, *from, err)
	}
	repo, err := signing.OpenRepo(*tufDir, nil)
	if err != nil {
		return err
	}
	pub, err := dest.publisher()
	if err != nil {
		return err
	}
	res, err := updater.PublishReleaseWith(context.Background(), pub, repo, img, cfg, updater.PublishOptions{Rollout: plan, Replace: *replace})
	if errors.Is(err, updater.ErrAlreadyPublished) {
		return fmt.Errorf("%w; publish this build as a new version (nodes already on %s would never take it under the same one), or pass --replace (docs/publishing.md)", err, cfg.Version)
	}
	if err != nil {
		return err
	}
	switch {
	case res.AlreadyPublished:
		fmt.Fprintf(g.stdout, "%s is already published with this manifest; nothing re-signed, pushed again to %s\n", cfg.Version, pub)
		if plan != nil {
			g.log.WithField("target", res.Target).Warn("--plan not applied: the release keeps its signed rollout plan ('sealift release rollout set' changes it)")
		}
	case res.Replaced != "":
		fmt.Fprintf(g.stdout, "replaced %s in %s (was manifest %s)\n", cfg.Version, pub, res.Replaced)
		g.log.WithFields(map[string]any{"version": cfg.Version, "replaced": res.Replaced, "manifest": res.Digest}).
			Warn("replaced a published version: nodes that run or staged the replaced manifest keep it, as do most that were downloading it, and nodes that fell back from it skip the replacement (docs/publishing.md)")
	default:
		fmt.Fprintf(g.stdout, "published %s to %s\n", cfg.Version, pub)
	}
	fmt.Fprintf(g.stdout, "signed target: %s\nmanifest:      %s\n", res.Target, res.Digest)
	describeRollout(g.stdout, &res.Meta, publisherNow())
	return nil
}

func cmdReleaseRecall(g *globals, args []string) error {
	fs := g.flagSet("release recall", "release recall VERSION --tuf DIR --variant N [--arch A] [--undo] (--repository R | --layout DIR)", false)
	tufDir := fs.String("tuf", "", "TUF repository directory")
	variant := fs.String("variant", "", "OS variant")
	arch := fs.String("arch", config.GoArchToOS("amd64"), "architecture")
	undo := fs.Bool("undo", false, "lift the recall")
	var dest registryFlags
	dest.add(fs, "registry repository to push the new metadata to")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *tufDir == "" || *variant == "" {
		return usageError{"release recall needs VERSION, --tuf and --variant"}
	}
	repo, err := signing.OpenRepo(*tufDir, nil)
	if err != nil {
		return err
	}
	pub, err := dest.publisher()
	if err != nil {
		return err
	}
	target := updater.TargetName(*variant, *arch, fs.Arg(0))
	if err := updater.SetRecalled(context.Background(), pub, repo, target, !*undo); err != nil {
		return err
	}
	verb := "recalled"
	if *undo {
		verb = "un-recalled"
	}
	fmt.Fprintf(g.stdout, "%s %s\n", verb, target)
	return nil
}

// nodeFlags are the flags of the node commands that read the config.
type nodeFlags struct {
	configPath     string
	allowDowngrade bool
}

func (n *nodeFlags) load() (*config.Config, error) {
	c, err := config.Load(n.configPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", updater.ErrBadInput, err)
	}
	return c, nil
}

func (n *nodeFlags) add(fs *pflag.FlagSet, downgradeHelp string) {
	fs.StringVar(&n.configPath, "config", config.DefaultPath, "node config")
	fs.BoolVar(&n.allowDowngrade, "allow-downgrade", false, downgradeHelp)
}

// node is what check and update work with: the config, the opened disk,
// the release source and the TUF client reading through it.
type node struct {
	cfg   *config.Config
	s     *session
	src   oci.Source
	trust *signing.Client
}

func (n *nodeFlags) open(ctx context.Context, g *globals, writable bool) (*node, error) {
	c, err := n.load()
	if err != nil {
		return nil, err
	}
	s, err := g.open(writable)
	if err != nil {
		return nil, err
	}
	src, err := nodeSource(c)
	if err != nil {
		s.Close()
		return nil, err
	}
	trust, err := nodeTrust(ctx, c, src)
	if err != nil {
		s.Close()
		return nil, err
	}
	nd := &node{cfg: c, s: s, src: src, trust: trust}
	if !writable {
		// A read-only session cannot save a newly drawn rollout seed.
		if err := ensureSeed(g, nd); err != nil {
			s.Close()
			return nil, err
		}
	}
	return nd, nil
}

func (n *nodeFlags) checkOptions(c *config.Config) updater.CheckOptions {
	return updater.CheckOptions{Variant: c.Node.Variant, Arch: c.Node.Arch, AllowDowngrade: n.allowDowngrade, Seed: c.Node.Seed}
}

func cmdCheck(g *globals, args []string) error {
	fs := g.flagSet("check", "check [--config FILE] [--disk DISK] [--json]", true)
	var n nodeFlags
	n.add(fs, "consider releases older than the running one")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	nd, err := n.open(context.Background(), g, false)
	if err != nil {
		return err
	}
	defer nd.s.Close()
	res, err := nd.s.up.Check(nd.trust, n.checkOptions(nd.cfg))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	running := res.Running
	if running == "" {
		running = "none"
	}
	fmt.Fprintf(g.stdout, "running:  %s\n", running)
	if res.Newest != nil {
		fmt.Fprintf(g.stdout, "newest:   %s (%s)\n", res.Newest.Meta.Version, res.Newest.Target)
	}
	printRollout(g.stdout, res)
	printHolds(g.stdout, "hold:     ", res.Holds)
	if res.Take != nil {
		fmt.Fprintf(g.stdout, "update:   %s: %s\n", res.Take.Meta.Version, res.Reason)
	} else {
		fmt.Fprintf(g.stdout, "update:   none: %s\n", res.Reason)
	}
	if v := res.Staged; v != nil {
		fmt.Fprintf(g.stdout, "staged:   %s in slot %s: %s: %s\n", v.Version, v.Slot, stagedWords[v.Action], v.Reason)
	}
	fmt.Fprintf(g.stdout, "reboot:   %s\n", rebootPlan(nd.cfg, time.Now()))
	return nil
}

// stagedWords says what the agent does with a staged update, by verdict.
var stagedWords = map[updater.StagedAction]string{
	updater.StagedReboot: "rebooted into as the reboot policy allows",
	updater.StagedWait:   "kept staged but not rebooted into for now",
	updater.StagedCancel: "to be cancelled, not rebooted into",
}

// rebootPlan says when the agent would reboot into a staged update, and why.
func rebootPlan(c *config.Config, now time.Time) string {
	r := c.Reboot
	window := func() string {
		ws := c.RebootWindows()
		if ws.Open(now) {
			return "now, inside a maintenance window"
		}
		start, _ := ws.Next(now)
		return fmt.Sprintf("in the next maintenance window, %s (in %s)", start.Format(time.RFC3339), start.Sub(now).Round(time.Minute))
	}
	switch r.Strategy {
	case "immediate":
		return "as soon as an update is staged (reboot.strategy immediate)"
	case "manual":
		return "never by sealift: an operator reboots (reboot.strategy manual)"
	case "window":
		return window() + " (reboot.strategy window)"
	case "fleetlock":
		lock := fmt.Sprintf("once the fleet lock of group %s at %s is granted", r.FleetLock.Group, r.FleetLock.URL)
		if len(r.Windows) == 0 {
			return lock + " (reboot.strategy fleetlock)"
		}
		return window() + ", " + lock + " (reboot.strategy fleetlock)"
	}
	return "unknown reboot strategy " + r.Strategy
}

func cmdUpdate(g *globals, args []string) error {
	fs := g.flagSet("update", "update [--config FILE] [--disk DISK] [--allow-downgrade] [--reboot]", true)
	var n nodeFlags
	n.add(fs, "install a release older than the running one")
	reboot := fs.Bool("reboot", false, "reboot into the new slot when the update is staged")
	rebootCmd := fs.String("reboot-command", "systemctl reboot", "command --reboot runs")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if c := g.agentClient(); c != nil {
		// The agent owns the disk: ask it to update rather than race it.
		if err := c.Apply(context.Background()); err != nil {
			return err
		}
		fmt.Fprintln(g.stdout, "an agent is running: asked it to check and stage now; it reboots as its reboot policy allows ('sealift events' follows it)")
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nd, err := n.open(ctx, g, true)
	if err != nil {
		return err
	}
	s := nd.s
	defer s.Close()
	report, finish := g.progress("updating")
	res, ir, err := s.up.Update(ctx, nd.trust, nd.src, updater.UpdateOptions{
		CheckOptions: n.checkOptions(nd.cfg),
		Tries:        nd.cfg.Update.Tries,
		Progress:     report,
	})
	finish()
	if errors.Is(err, updater.ErrNoRelease) {
		fmt.Fprintf(g.stdout, "no update: %s\n", res.Reason)
		return nil
	}
	if err != nil {
		return err
	}
	g.log.WithFields(map[string]any{"version": ir.Record.Version, "slot": ir.Slot, "manifest": ir.Record.ManifestDigest,
		"verity_root": ir.Record.Verity.RootHash, "direct_io": ir.DirectIO}).Info("update staged")
	for _, t := range ir.Timings {
		g.log.WithFields(map[string]any{"phase": t.Phase, "seconds": fmt.Sprintf("%.3f", t.Duration.Seconds())}).Debug("install phase")
	}
	fmt.Fprintf(g.stdout, "installed %s into slot %s (%s); %s\n", ir.Record.Version, ir.Slot, res.Reason, ir.Next)
	if *reboot {
		ok, err := confirmStaged(g, nd, n.checkOptions(nd.cfg), ir.Record.Version)
		if err != nil || !ok {
			return err
		}
		s.Close()
		return runReboot(g, strings.Fields(*rebootCmd))
	}
	return nil
}

// updateActor is who cancels a staged update for update --reboot: the
// command, on the signed metadata's word, not the operator who ran it.
const updateActor = "sealift update --reboot"

// confirmStaged refreshes the signed metadata and judges the staged
// version again before update --reboot reboots into it, as the agent
// does (docs/agent.md): the download may have taken long enough for a
// halt or a recall to come in. It returns whether to reboot; a recalled
// release is cancelled.
func confirmStaged(g *globals, nd *node, o updater.CheckOptions, version string) (bool, error) {
	res, err := nd.s.up.Check(nd.trust, o)
	if err != nil {
		return false, fmt.Errorf("not rebooting: confirm that %s may still be rebooted into: %w", version, err)
	}
	v := res.Staged
	if v == nil || v.Version != version {
		return false, fmt.Errorf("not rebooting: %s is no longer the staged update", version)
	}
	switch v.Action {
	case updater.StagedReboot:
		return true, nil
	case updater.StagedCancel:
		// As the agent's, this cancel leaves no skip: the recall or the
		// newer release already keeps the node from it.
		if _, err := nd.s.up.CancelStaged(v.Version, updater.Actor{By: updateActor, Reason: v.Reason}); err != nil {
			return false, fmt.Errorf("not rebooting; cancel the staged %s: %w", v.Version, err)
		}
		g.log.WithFields(map[string]any{"version": v.Version, "slot": v.Slot, "reason": v.Reason}).Warn("staged update cancelled instead of rebooting into it")
		fmt.Fprintf(g.stdout, "not rebooting: cancelled %s in slot %s: %s\n", v.Version, v.Slot, v.Reason)
	default:
		g.log.WithFields(map[string]any{"version": v.Version, "slot": v.Slot, "reason": v.Reason}).Warn("staged update not rebooted into")
		fmt.Fprintf(g.stdout, "not rebooting: %s stays staged in slot %s: %s\n", v.Version, v.Slot, v.Reason)
	}
	return false, nil
}
