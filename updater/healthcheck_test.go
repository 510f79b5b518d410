package updater

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/updater/health"
)

type probe struct{ err error }

func (p probe) Name() string              { return "kubelet" }
func (p probe) Run(context.Context) error { return p.err }

type stepClock struct{ t time.Time }

func (c *stepClock) Now() time.Time { return c.t }
func (c *stepClock) Sleep(_ context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return nil
}

func TestHealth(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		onTrial   bool
		action    string
		nextBoot  bootloader.Slot
		wantTrial bool
		rounds    int
	}{
		// 20 s of probation at 5 s intervals: rounds at 0, 5, ... 20 s.
		{"healthy trial is kept", nil, true, "marked-good", bootloader.SlotB, false, 5},
		// Failing until the minute's deadline.
		{"unhealthy trial falls back", errors.New("HTTP status 500"), true, "marked-bad", bootloader.SlotA, false, 13},
		// No probation window: nothing waits on the verdict. A failing
		// check still has until the deadline to come up.
		{"good slot is only reported on", errors.New("HTTP status 500"), false, "none", bootloader.SlotA, false, 13},
		{"healthy good slot is reported on at once", nil, false, "none", bootloader.SlotA, false, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, backends[1].make)
			mustInstall(t, r.u, image(1, 16*4096), "v1")
			mustBoot(t, r.u, bootloader.SlotA, true)
			r.u.MarkGood()
			if c.onTrial {
				mustInstall(t, r.u, image(2, 16*4096), "v2")
				mustBoot(t, r.u, bootloader.SlotB, true)
			}
			p := &health.Policy{Probation: 20 * time.Second, Interval: 5 * time.Second, Deadline: time.Minute, Checks: []health.Check{probe{c.err}}}
			res, err := r.u.Health(context.Background(), p, &stepClock{t: time.Unix(0, 0)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Action != c.action || res.OnTrial != c.onTrial || res.Verdict.Rounds != c.rounds || res.Verdict.Healthy != (c.err == nil) {
				t.Fatalf("%+v", res)
			}
			flags, _ := r.boot.Load()
			if d := r.boot.Simulate(flags); d.Slot != c.nextBoot || d.Trial != c.wantTrial {
				t.Fatalf("next boot %v", d)
			}
			if c.action == "marked-bad" {
				// The next boot is A; boot-check there records the failing check.
				mustBoot(t, r.u, bootloader.SlotA, false)
				bc, err := r.u.BootCheck()
				if err != nil || bc.Result != "rolled-back" || !strings.Contains(bc.Outcome.Reason, `health check "kubelet" failed: HTTP status 500`) {
					t.Fatalf("boot check: %+v %v", bc, err)
				}
			}
		})
	}
}
