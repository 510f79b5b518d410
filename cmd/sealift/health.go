package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"sealift/updater"
	"sealift/updater/config"
	"sealift/updater/health"
)

func init() {
	register(command{"health", "run the health checks; keep a new slot when healthy, mark it bad and reboot when not", cmdHealth})
}

func cmdHealth(g *globals, args []string) error {
	fs := g.flagSet("health", "health [--config FILE] [--disk DISK] [--no-reboot] [--json]", true)
	var n nodeFlags
	fs.StringVar(&n.configPath, "config", config.DefaultPath, "node config with the [health] section")
	noReboot := fs.Bool("no-reboot", false, "mark an unhealthy slot bad but do not reboot")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	c, err := n.load()
	if err != nil {
		return err
	}
	policy, err := c.Health.Compile()
	if err != nil {
		return fmt.Errorf("%w: %v", updater.ErrBadInput, err)
	}
	s, err := g.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g.log.WithFields(map[string]any{"checks": len(policy.Checks), "probation": policy.Probation, "deadline": policy.Deadline}).Info("health check started")
	res, err := s.up.Health(ctx, policy, health.RealClock{})
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(g.stdout, string(b))
	}
	switch {
	case res.Verdict.Healthy:
		if !*asJSON {
			fmt.Fprintf(g.stdout, "slot %s healthy after %d rounds (%s); %s\n", res.Running, res.Verdict.Rounds, res.Verdict.Took, res.Action)
		}
		return nil
	case res.Action == "marked-bad":
		g.log.WithFields(map[string]any{"check": res.Verdict.Failed, "output": res.Verdict.Output}).Error("slot unhealthy: marked bad")
		if !*asJSON {
			fmt.Fprintf(g.stdout, "slot %s unhealthy: check %q: %s; marked bad\n", res.Running, res.Verdict.Failed, res.Verdict.Output)
		}
		if *noReboot {
			return nil
		}
		s.Close()
		return runReboot(g, policy.RebootCommand)
	default:
		// A slot that is not on trial is reported on, never changed.
		return fmt.Errorf("slot %s unhealthy: check %q: %s (not on trial: flags unchanged)", res.Running, res.Verdict.Failed, res.Verdict.Output)
	}
}
