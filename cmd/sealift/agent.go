package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"sealift/internal/sdnotify"
	"sealift/updater"
	"sealift/updater/agent"
	"sealift/updater/config"
	"sealift/updater/fleetlock"
	"sealift/updater/state"
)

func init() {
	register(command{"agent", "run the update agent: check, stage, reboot in the window / with the fleet lock, serve the local API", cmdAgent})
	register(command{"apply", "ask the running agent to check and stage an update now (its reboot policy still applies)", cmdApply})
}

// cliNode is the agent's Node and Operator: every call opens the disk
// afresh, so the disk lock is held only while an operation runs.
type cliNode struct {
	g  *globals
	nf *nodeFlags

	mu  sync.Mutex
	cfg *config.Config // replaced on reload
	// now, when set, is the agent's pretend clock (--now): the updater
	// judges waves and stamps events with it too.
	now func() time.Time
	// beat tells the agent's watchdog that a long write makes progress.
	beat func()
}

// up readies an opened updater.
func (n *cliNode) up(u *updater.Updater) *updater.Updater {
	if n.now != nil {
		u.Now = n.now
	}
	return u
}

func (n *cliNode) config() *config.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

func (n *cliNode) Status(context.Context) (*updater.Status, error) {
	s, err := n.g.open(false)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return n.up(s.up).Status()
}

func (n *cliNode) Check(ctx context.Context) (*updater.CheckResult, error) {
	nd, err := n.nf.open(ctx, n.g, false)
	if err != nil {
		return nil, err
	}
	defer nd.s.Close()
	return n.up(nd.s.up).Check(nd.trust, n.nf.checkOptions(nd.cfg))
}

func (n *cliNode) Update(ctx context.Context) (*updater.CheckResult, *updater.InstallResult, error) {
	nd, err := n.nf.open(ctx, n.g, true)
	if err != nil {
		return nil, nil, err
	}
	defer nd.s.Close()
	return n.up(nd.s.up).Update(ctx, nd.trust, nd.src, updater.UpdateOptions{
		CheckOptions: n.nf.checkOptions(nd.cfg),
		Tries:        nd.cfg.Update.Tries,
		Progress:     stagingProgress(n.g.log, n.beat),
	})
}

// stagingProgress logs a write into the inactive slot at each quarter, so
// the journal shows an update under way (it may take minutes), and calls
// beat (when set) at every step of it, for the watchdog.
func stagingProgress(log *logrus.Logger, beat func()) func(done, total int64) {
	next := int64(1) // the next quarter to log
	return func(done, total int64) {
		if beat != nil {
			beat()
		}
		if total <= 0 || done*4 < next*total {
			return
		}
		q := done * 4 / total
		log.WithFields(logrus.Fields{"written": done, "size": total}).
			Infof("staging: %d%% of %d MiB written into the inactive slot", q*25, total>>20)
		next = q + 1
	}
}

// withDisk runs fn on the disk opened for writing.
func (n *cliNode) withDisk(fn func(u *updater.Updater) error) error {
	s, err := n.g.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(n.up(s.up))
}

func (n *cliNode) Record(e state.Event) error {
	return n.withDisk(func(u *updater.Updater) error { return u.Record(e) })
}

func (n *cliNode) SetFleetLock(h *state.LockHold) error {
	return n.withDisk(func(u *updater.Updater) error { return u.SetFleetLock(h) })
}

func (n *cliNode) Cancel(_ context.Context, a updater.Actor) (r *updater.CancelResult, err error) {
	return r, n.withDisk(func(u *updater.Updater) error { r, err = u.Cancel(a); return err })
}

func (n *cliNode) CancelStaged(_ context.Context, version string, a updater.Actor) error {
	return n.withDisk(func(u *updater.Updater) error { _, err := u.CancelStaged(version, a); return err })
}

func (n *cliNode) Rollback(_ context.Context, a updater.Actor) (r *updater.RollbackResult, err error) {
	return r, n.withDisk(func(u *updater.Updater) error { r, err = u.Rollback(a); return err })
}

func (n *cliNode) SetHold(_ context.Context, req updater.HoldRequest) (ch *updater.HoldChange, err error) {
	return ch, n.withDisk(func(u *updater.Updater) error { ch, err = u.SetHold(req); return err })
}

func (n *cliNode) ClearHolds(_ context.Context, kind state.HoldKind, version string, a updater.Actor) (gone []state.Hold, err error) {
	return gone, n.withDisk(func(u *updater.Updater) error { gone, err = u.ClearHolds(kind, version, a); return err })
}

func (n *cliNode) Events(_ context.Context, after uint64) ([]state.Event, error) {
	s, err := n.g.open(false)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.up.Events(after)
}

// commandRebooter runs the configured reboot command.
type commandRebooter struct{ node *cliNode }

func (r commandRebooter) Reboot(ctx context.Context) error {
	args := r.node.config().Reboot.Command
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("reboot command %q: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// fleetLocker adapts the FleetLock client to the agent's Locker.
type fleetLocker struct{ c *fleetlock.Client }

func (l fleetLocker) Lock(ctx context.Context) error {
	err := l.c.PreReboot(ctx)
	if errors.Is(err, fleetlock.ErrLockDenied) {
		return fmt.Errorf("%w: %v", agent.ErrLockBusy, err)
	}
	return err
}

func (l fleetLocker) Unlock(ctx context.Context) error { return l.c.SteadyState(ctx) }

// agentSetup turns a config into the agent's policy and lock client.
func agentSetup(c *config.Config) (agent.Policy, agent.Locker, error) {
	p := agent.Policy{
		Interval:      c.Agent.Interval.Duration,
		Jitter:        c.Agent.Jitter.Duration,
		Download:      c.DownloadWindows(),
		Reboot:        agent.Strategy(c.Reboot.Strategy),
		RebootWindows: c.RebootWindows(),
	}
	if p.Reboot != agent.FleetLock {
		return p, nil, nil
	}
	p.LockGroup = c.Reboot.FleetLock.Group
	id, err := fleetlock.NodeID(c.Reboot.FleetLock.MachineID)
	if err != nil {
		return p, nil, fmt.Errorf("%w: reboot.fleetlock.machine_id: %v", updater.ErrBadInput, err)
	}
	return p, fleetLocker{&fleetlock.Client{BaseURL: c.Reboot.FleetLock.URL, Group: p.LockGroup, ID: id}}, nil
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// fixedClock is --now's pretend time.
type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

func cmdAgent(g *globals, args []string) error {
	fs := g.flagSet("agent", "agent [--config FILE] [--disk DISK] [--once]", true)
	var nf nodeFlags
	nf.add(fs, "take releases older than the running one")
	once := fs.Bool("once", false, "make one decision, print it and exit (no API, no loop)")
	nowFlag := fs.String("now", "", "with --once: decide as if it were this time (RFC 3339), to try out windows")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	cfg, err := nf.load()
	if err != nil {
		return err
	}
	node := &cliNode{g: g, nf: &nf, cfg: cfg}
	policy, locker, err := agentSetup(cfg)
	if err != nil {
		return err
	}
	var clock agent.Clock = realClock{}
	if *nowFlag != "" {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil || !*once {
			return usageError{fmt.Sprintf("--now %q: want an RFC 3339 time, with --once", *nowFlag)}
		}
		clock = fixedClock(t)
		node.now = clock.Now
	}
	a, err := agent.New(policy, node, commandRebooter{node}, locker, clock)
	if err != nil {
		return fmt.Errorf("%w: %v", updater.ErrBadInput, err)
	}
	node.beat = a.Beat
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *once {
		info := a.Step(ctx)
		logStep(g.log, info)
		fmt.Fprintf(g.stdout, "%s: %s; next step at %s\n", info.Action, info.Detail, info.Next.Format(time.RFC3339))
		if info.Err != "" {
			return errors.New(info.Err)
		}
		return nil
	}

	// The socket is the agent's identity: a second agent finds it served
	// and refuses to start, so only one loop ever edits the disk.
	ln, err := agent.ListenSocket(cfg.Agent.Socket)
	if err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	defer os.Remove(cfg.Agent.Socket)
	wake := make(chan struct{}, 1)
	api := &http.Server{Handler: a.Handler(node, wake), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = api.Serve(ln) }()
	defer api.Close()

	metrics := agent.NewMetrics()
	var metricsSrv *http.Server
	if addr := cfg.Agent.MetricsListen; addr != "" {
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("agent.metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = metricsSrv.Serve(mln) }()
		defer metricsSrv.Close()
	}
	a.OnStep = func(info agent.StepInfo) {
		logStep(g.log, info)
		st, _ := node.Status(ctx)
		evs, _ := node.Events(ctx, 0)
		metrics.Observe(info, st, evs)
		// systemctl status shows the agent's latest decision.
		_, _ = sdnotify.Notify("STATUS=" + stepStatus(info))
	}

	// SIGHUP reloads the config (and drop-ins); a bad one is reported and
	// the running one kept.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			c, err := nf.load()
			if err == nil {
				var p agent.Policy
				var l agent.Locker
				if p, l, err = agentSetup(c); err == nil {
					if l != nil {
						a.SetLocker(l)
					}
					if err = a.SetPolicy(p); err == nil {
						node.mu.Lock()
						node.cfg = c
						node.mu.Unlock()
					}
				}
			}
			if err != nil {
				g.log.WithError(err).Error("config reload failed; keeping the running config")
				continue
			}
			g.log.Info("config reloaded")
			_ = node.Record(state.Event{Kind: state.EventAgentStarted, Message: "agent reloaded its config"})
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()

	// Under systemd (Type=notify) the agent is ready once its API serves.
	if _, err := sdnotify.Notify(sdnotify.Ready + "\nSTATUS=starting"); err != nil {
		g.log.WithError(err).Warn("could not tell systemd the agent is ready")
	}
	if d := sdnotify.WatchdogInterval(); d > 0 {
		go watchdog(ctx, a, d)
	}
	defer sdnotify.Notify(sdnotify.Stopping)
	p := a.Policy()
	g.log.WithFields(logrus.Fields{"socket": cfg.Agent.Socket, "interval": p.Interval, "reboot": p.Reboot,
		"metrics": cfg.Agent.MetricsListen}).Info("agent started")
	_ = node.Record(state.Event{Kind: state.EventAgentStarted,
		Message: fmt.Sprintf("agent started (check every %s, reboot strategy %s)", p.Interval, p.Reboot)})
	// SIGTERM cancels ctx: an update being written stops with its slot
	// still unbootable (the flip is never interrupted halfway, it does
	// not watch ctx), and the loop ends.
	err = a.Run(ctx, wake, nil)
	g.log.Info("agent stopped")
	return err
}

// watchdog tells systemd the agent is alive, at half its interval, for
// as long as the agent's loop shows progress within the interval (a
// step, a look at the clock while it sleeps, a write that goes on). An
// agent stuck in a call that never returns stops pinging, and systemd
// restarts it (WatchdogSec= in sealift-agent.service).
func watchdog(ctx context.Context, a *agent.Agent, interval time.Duration) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if a.SinceBeat() < interval {
				_, _ = sdnotify.Notify(sdnotify.Watchdog)
			}
		}
	}
}

// stepStatus is a step as one line for systemd's STATUS=.
func stepStatus(info agent.StepInfo) string {
	what := info.Detail
	if info.Err != "" {
		what = info.Err
	}
	// One line: a newline would end the assignment.
	what = strings.Join(strings.Fields(what), " ")
	return fmt.Sprintf("%s: %s (next step %s)", info.Action, what, info.Next.Format(time.RFC3339))
}

func logStep(log *logrus.Logger, info agent.StepInfo) {
	e := log.WithFields(logrus.Fields{"action": info.Action, "next": info.Next.Format(time.RFC3339)})
	if info.Err != "" {
		e.WithField("error", info.Err).Warn("agent step failed")
		return
	}
	e.Info(info.Detail)
}

// agentSocket is where the running agent serves, from the config.
func agentSocket(configPath string) string {
	c, err := config.Load(configPath)
	if err != nil {
		return config.Defaults().Agent.Socket
	}
	return c.Agent.Socket
}

func cmdApply(g *globals, args []string) error {
	fs := g.flagSet("apply", "apply [--config FILE]", false)
	cfgPath := fs.String("config", config.DefaultPath, "node config (names the agent's socket)")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	c, err := agent.Dial(agentSocket(*cfgPath))
	if err != nil {
		return fmt.Errorf("no agent is running (%v); 'sealift update' works without one", err)
	}
	if err := c.Apply(context.Background()); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "the agent checks and stages now; it reboots as its reboot policy allows ('sealift events' follows it)")
	return nil
}
