package updater

import (
	"context"
	"fmt"

	"sealift/bootloader"
	"sealift/updater/health"
	"sealift/updater/state"
)

// HealthResult is what Health decided and did.
type HealthResult struct {
	Running bootloader.Slot `json:"running"`
	// OnTrial is true when the running slot is a pending update, the only
	// case in which Health changes the boot flags.
	OnTrial bool           `json:"on_trial"`
	Verdict health.Verdict `json:"verdict"`
	// Action is "marked-good", "marked-bad" (the caller reboots) or "none".
	Action string `json:"action"`
}

// Health runs the health policy on the running system. When the running
// slot is a pending update on trial, a healthy verdict marks it good and
// an unhealthy one marks it bad, recording which check failed and what it
// said; the caller then reboots so the bootloader falls back. A slot that
// is already good is only reported on, as soon as a round passes: marking
// it bad could leave nothing to fall back to.
func (u *Updater) Health(ctx context.Context, p *health.Policy, clk health.Clock) (*HealthResult, error) {
	st, running, err := u.loadRunning()
	if err != nil {
		return nil, err
	}
	trial := st.Pending != nil && st.Pending.Slot == running && st.Pending.Phase == state.PhaseTrial
	if !trial {
		// Nothing hangs on the verdict of a slot already kept, so the
		// first passing round says it is well; a probation window here
		// would only hold up the agent, which starts after this verdict.
		// Failing rounds still go on to the deadline: a service that is
		// still starting is not reported unhealthy.
		quick := *p
		quick.Probation = 0
		p = &quick
	}
	v, err := p.Evaluate(ctx, clk)
	if err != nil {
		return nil, err
	}
	res := &HealthResult{Running: running, OnTrial: trial, Verdict: v, Action: "none"}
	if !trial {
		return res, nil
	}
	if v.Healthy {
		if _, err := u.MarkGood(); err != nil {
			return res, err
		}
		res.Action = "marked-good"
		return res, nil
	}
	reason := fmt.Sprintf("health check %q failed: %s", v.Failed, v.Output)
	if _, err := u.MarkBad(reason); err != nil {
		return res, err
	}
	res.Action = "marked-bad"
	return res, nil
}
