package rollout

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"
)

// MaxSimulatedNodes bounds Simulate's fleet (memory: 8 bytes a node).
const MaxSimulatedNodes = 10_000_000

// Simulation is a fleet of nodes with random seeds under one plan.
type Simulation struct {
	Plan     Plan
	Nodes    int
	RandSeed uint64
	// at holds each node's eligibility time after the start, sorted;
	// nodes beyond the plan are left out.
	at []time.Duration
}

// Simulate draws nodes seeds from a PCG source seeded with randSeed (the
// same randSeed gives the same fleet) and schedules them under p. The
// plan's start and halt do not matter: times are offsets from the start.
func Simulate(p Plan, nodes int, randSeed uint64) (*Simulation, error) {
	if nodes < 1 || nodes > MaxSimulatedNodes {
		return nil, fmt.Errorf("simulated nodes: %d is outside 1..%d", nodes, MaxSimulatedNodes)
	}
	if errs := validateWaves(p.Waves); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var bySeed [Seeds]time.Duration
	for seed := range bySeed {
		if s := p.place(seed); s.wave >= 0 {
			bySeed[seed] = s.after
		} else {
			bySeed[seed] = -1
		}
	}
	// PCG's output is fixed by its definition, and the top 11 bits of a
	// draw are a uniform seed, so the fleet does not depend on how a Go
	// release implements IntN.
	r := rand.NewPCG(randSeed, 0x5ea11f7)
	sim := &Simulation{Plan: p, Nodes: nodes, RandSeed: randSeed, at: make([]time.Duration, 0, nodes)}
	for range nodes {
		if d := bySeed[r.Uint64()>>53]; d >= 0 {
			sim.at = append(sim.at, d)
		}
	}
	sort.Slice(sim.at, func(i, j int) bool { return sim.at[i] < sim.at[j] })
	return sim, nil
}

// Fraction is the share of the simulated fleet eligible at Start+d.
func (s *Simulation) Fraction(d time.Duration) float64 {
	n := sort.Search(len(s.at), func(i int) bool { return s.at[i] > d })
	return float64(n) / float64(s.Nodes)
}

// Point is one row of a simulation's table.
type Point struct {
	After time.Duration // since the start
	Label string
	// Percent is the plan's percentage at a wave boundary, 0 elsewhere.
	Percent int
	// Expected is the share of the seed space eligible (what an
	// infinite fleet would show), Eligible the simulated fleet's.
	Expected float64
	Eligible float64
}

// Points samples the simulation at the start, in the middle of every
// wave and at every wave boundary.
func (s *Simulation) Points() []Point {
	pts := []Point{{After: 0, Label: "start"}}
	var from time.Duration
	for i, w := range s.Plan.Waves {
		if mid := from + (w.After-from)/2; w.After > from && mid > from {
			pts = append(pts, Point{After: mid, Label: fmt.Sprintf("wave %d middle", i+1)})
		}
		pts = append(pts, Point{After: w.After, Label: fmt.Sprintf("wave %d boundary", i+1), Percent: w.Percent})
		from = w.After
	}
	if len(pts) > 1 && pts[1].After == 0 {
		pts = pts[1:] // a first wave at 0 is the start
	}
	for i := range pts {
		pts[i].Expected = s.Plan.fractionAfter(pts[i].After)
		pts[i].Eligible = s.Fraction(pts[i].After)
	}
	return pts
}
