package rollout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrBadSeed is returned for a seed outside 0..Seeds-1.
var ErrBadSeed = errors.New("rollout seed out of range")

// NewSeed draws a seed uniformly from 0..Seeds-1 (pass crypto/rand.Reader).
func NewSeed(r io.Reader) (int, error) {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("draw rollout seed: %w", err)
	}
	// 65536 is a multiple of Seeds, so the low bits are uniform.
	return int(binary.BigEndian.Uint16(b[:])) % Seeds, nil
}

// CheckSeed returns an error wrapping ErrBadSeed when seed is out of range.
func CheckSeed(seed int) error {
	if seed < 0 || seed >= Seeds {
		return fmt.Errorf("%w: %d is outside 0..%d", ErrBadSeed, seed, Seeds-1)
	}
	return nil
}

// WaveSeeds returns the seeds of wave i (0-based) as [lo, hi): the seeds
// between the previous wave's cumulative percentage and this wave's, as a
// fraction of Seeds, rounded down so a boundary never has more than its
// percentage eligible.
func (p *Plan) WaveSeeds(i int) (lo, hi int) {
	if i > 0 {
		lo = cumulative(p.Waves[i-1].Percent)
	}
	return lo, cumulative(p.Waves[i].Percent)
}

func cumulative(percent int) int { return Seeds * percent / 100 }

// slot is where a seed falls in a valid plan, ignoring any halt.
type slot struct {
	wave   int           // 0-based; -1 beyond the last wave
	lo, hi int           // the wave's seeds
	after  time.Duration // eligible at Start+after
}

// place computes a seed's eligibility time. The seeds of wave i are spread
// evenly, by their offset inside the wave, over the time from the previous
// wave's after (0 for the first wave) to this wave's after: the node at
// offset o of n becomes eligible (o+1)/n of the way through, rounded up to
// whole seconds. The wave's last seed is thus eligible exactly at the
// wave's boundary and the next wave's first seed a step after it, so at
// every boundary exactly the wave's seeds are eligible.
func (p *Plan) place(seed int) slot {
	for i, w := range p.Waves {
		lo, hi := p.WaveSeeds(i)
		if seed >= hi {
			continue
		}
		var from time.Duration
		if i > 0 {
			from = p.Waves[i-1].After
		}
		span := int64((w.After - from) / time.Second) // whole seconds, at most a year
		n, k := int64(hi-lo), int64(seed-lo+1)
		secs := (span*k + n - 1) / n
		return slot{wave: i, lo: lo, hi: hi, after: from + time.Duration(secs)*time.Second}
	}
	return slot{wave: -1, lo: cumulative(p.Waves[len(p.Waves)-1].Percent), hi: Seeds}
}

// Eligibility is where one node stands in a release's rollout.
type Eligibility struct {
	// Eligible: the node may take the release now.
	Eligible bool `json:"eligible"`
	// At is when the node is (or was) eligible; zero while the rollout
	// is halted (the resume decides) and for a seed beyond the plan.
	At   time.Time `json:"eligible_at,omitzero"`
	Seed int       `json:"seed"`
	// Wave is the node's wave, 1-based, of Waves; 0 beyond the plan.
	Wave  int `json:"wave"`
	Waves int `json:"waves"`
	// FleetPercent is the cumulative percentage the node's wave brings
	// the fleet to (the last wave's for a seed beyond the plan).
	FleetPercent int `json:"fleet_percent"`
	// Offset is the seed's position inside its wave (seed minus the
	// wave's first seed) of WaveSize seeds.
	Offset   int `json:"offset"`
	WaveSize int `json:"wave_size"`
	// Position is (Offset+1)/WaveSize: how far through the wave's time
	// span the node becomes eligible.
	Position float64 `json:"position"`
	// Beyond: the seed is above the last wave's percentage; the node is
	// not eligible until the plan changes.
	Beyond   bool      `json:"beyond_plan,omitempty"`
	Halted   bool      `json:"halted,omitempty"`
	HaltedAt time.Time `json:"halted_at,omitzero"`
}

// Eligibility computes where the node with seed stands at now. The plan
// is validated first: a plan that is not valid decides nothing.
func (p *Plan) Eligibility(seed int, now time.Time) (Eligibility, error) {
	if err := CheckSeed(seed); err != nil {
		return Eligibility{}, err
	}
	if err := p.Validate(); err != nil {
		return Eligibility{}, err
	}
	s := p.place(seed)
	e := Eligibility{Seed: seed, Waves: len(p.Waves), Offset: seed - s.lo, WaveSize: s.hi - s.lo,
		Halted: p.Halted(), HaltedAt: p.HaltedAt}
	if s.wave < 0 {
		e.Beyond = true
		e.FleetPercent = p.Waves[len(p.Waves)-1].Percent
		return e, nil
	}
	e.Wave = s.wave + 1
	e.FleetPercent = p.Waves[s.wave].Percent
	e.Position = float64(e.Offset+1) / float64(e.WaveSize)
	if e.Halted {
		return e, nil
	}
	e.At = p.Start.Add(s.after)
	e.Eligible = !now.Before(e.At)
	return e, nil
}

// PercentIntoWave is Position as a whole percentage, rounded down.
func (e Eligibility) PercentIntoWave() int {
	if e.WaveSize == 0 {
		return 0
	}
	return (e.Offset + 1) * 100 / e.WaveSize
}

// String says it the way 'sealift check' prints it:
// "eligible at 2026-12-01T10:32:00Z, wave 2 of 7, seed 731, 43% into the wave".
func (e Eligibility) String() string {
	where := fmt.Sprintf("wave %d of %d, seed %d, %d%% into the wave", e.Wave, e.Waves, e.Seed, e.PercentIntoWave())
	switch {
	case e.Beyond:
		return fmt.Sprintf("not eligible until the plan changes: seed %d is beyond the plan's last wave (%d%% of the fleet, seeds 0-%d)",
			e.Seed, e.FleetPercent, cumulative(e.FleetPercent)-1)
	case e.Halted:
		return fmt.Sprintf("rollout halted since %s; this node: %s", stamp(e.HaltedAt), where)
	case e.Eligible:
		return fmt.Sprintf("eligible since %s, %s", stamp(e.At), where)
	}
	return fmt.Sprintf("eligible at %s, %s", stamp(e.At), where)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Fraction is the share of the seed space eligible at t under the
// schedule, ignoring a halt: what a large fleet converges to. It is 0
// for a plan whose waves are not valid.
func (p *Plan) Fraction(t time.Time) float64 { return p.fractionAfter(t.Sub(p.Start)) }

// fractionAfter is Fraction at Start+d.
func (p *Plan) fractionAfter(d time.Duration) float64 {
	if len(validateWaves(p.Waves)) > 0 {
		return 0
	}
	n := 0
	for seed := 0; seed < Seeds; seed++ {
		if s := p.place(seed); s.wave >= 0 && s.after <= d {
			n++
		}
	}
	return float64(n) / Seeds
}
