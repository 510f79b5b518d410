// Package rollout stages a release across a fleet in waves. A release's
// signed TUF metadata carries a Plan (a start time and waves of
// {after, cumulative fleet percentage}); every node has a seed in
// 0..Seeds-1 and computes from the plan, its seed and the clock when it may
// take the release. Nothing is coordinated at run time: the plan and the
// seed decide, so every node and every operator tool computes the same
// answer. docs/rollout.md gives the semantics and the formats.
package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Seeds is the size of the seed space: a node's seed is in 0..Seeds-1.
// 2048 is Bottlerocket's; one seed is 0.05% of a fleet.
const Seeds = 2048

// MaxAfter bounds a wave's time after the start. A rollout longer than a
// year is a mistake in units far more often than a plan.
const MaxAfter = 366 * 24 * time.Hour

// Wave is one step of a plan: by Start+After, Percent percent of the fleet
// (cumulative, including earlier waves) is eligible.
type Wave struct {
	After   time.Duration
	Percent int
}

// Plan is the rollout schedule of one release.
type Plan struct {
	Start time.Time
	Waves []Wave
	// HaltedAt is when the rollout was halted; zero while it runs. A
	// halted rollout is taken by no node that is not already on it.
	HaltedAt time.Time
}

// ErrInvalidPlan is wrapped by every validation and parse error.
var ErrInvalidPlan = errors.New("invalid rollout plan")

// FieldError is a validation error naming the field it is about, in the
// names of the plan file and the signed JSON ("waves[2].percent").
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrInvalidPlan) true.
func (e *FieldError) Unwrap() error { return ErrInvalidPlan }

// DefaultWaves are Bottlerocket's default waves: 1% after an hour, then
// 5%, 15%, 40%, 60%, 90% and everyone after six days.
func DefaultWaves() []Wave {
	const day = 24 * time.Hour
	return []Wave{
		{time.Hour, 1},
		{4 * time.Hour, 5},
		{day, 15},
		{2 * day, 40},
		{4 * day, 60},
		{5 * day, 90},
		{6 * day, 100},
	}
}

// Default is the default plan starting at start.
func Default(start time.Time) Plan {
	return Plan{Start: start.UTC().Truncate(time.Second), Waves: DefaultWaves()}
}

// Immediate is the plan of a release without waves: everyone at start.
// Halting a release that was published without a plan records this plan,
// so the halt has somewhere to live.
func Immediate(start time.Time) Plan {
	return Plan{Start: start.UTC().Truncate(time.Second), Waves: []Wave{{0, 100}}}
}

// Halted reports whether the rollout is halted.
func (p *Plan) Halted() bool { return !p.HaltedAt.IsZero() }

// Halt freezes the rollout at now. It returns false (and changes nothing)
// when the rollout is halted already, so the first halt's time is kept.
func (p *Plan) Halt(now time.Time) bool {
	if p.Halted() {
		return false
	}
	p.HaltedAt = now.UTC().Truncate(time.Second)
	return true
}

// Resume lifts a halt and moves the start later by the time the rollout
// spent halted (only the part after the start counts), so the rollout
// continues from where it stopped: the share of the fleet eligible just
// after the resume is the share that was eligible when it was halted, and
// no node whose time fell inside the halt rushes in at once. It returns
// false when the rollout was not halted.
func (p *Plan) Resume(now time.Time) bool {
	if !p.Halted() {
		return false
	}
	from := p.HaltedAt
	if from.Before(p.Start) {
		from = p.Start
	}
	if d := now.UTC().Truncate(time.Second).Sub(from); d > 0 {
		p.Start = p.Start.Add(d)
	}
	p.HaltedAt = time.Time{}
	return true
}

// Validate checks the whole plan, start included. The error joins one
// *FieldError per problem.
func (p *Plan) Validate() error {
	var errs []error
	if p.Start.IsZero() {
		errs = append(errs, &FieldError{"start", "required"})
	} else if p.Start.Nanosecond() != 0 {
		errs = append(errs, &FieldError{"start", fmt.Sprintf("%s: whole seconds only", p.Start.Format(time.RFC3339Nano))})
	}
	errs = append(errs, validateWaves(p.Waves)...)
	return errors.Join(errs...)
}

func validateWaves(ws []Wave) []error {
	if len(ws) == 0 {
		return []error{&FieldError{"waves", "at least one wave is needed"}}
	}
	var errs []error
	bad := func(i int, field, format string, a ...any) {
		errs = append(errs, &FieldError{fmt.Sprintf("waves[%d].%s", i, field), fmt.Sprintf(format, a...)})
	}
	for i, w := range ws {
		switch {
		case w.After < 0:
			bad(i, "after", "%s is negative", FormatDuration(w.After))
		case w.After > MaxAfter:
			bad(i, "after", "%s is longer than %s", FormatDuration(w.After), FormatDuration(MaxAfter))
		case w.After%time.Second != 0:
			bad(i, "after", "%s: whole seconds only", w.After)
		case i > 0 && w.After <= ws[i-1].After:
			bad(i, "after", "%s is not later than waves[%d].after %s: waves must be sorted by after, each later than the one before",
				FormatDuration(w.After), i-1, FormatDuration(ws[i-1].After))
		}
		switch {
		case w.Percent < 1 || w.Percent > 100:
			bad(i, "percent", "%d is outside 1..100", w.Percent)
		case i > 0 && w.Percent <= ws[i-1].Percent:
			bad(i, "percent", "%d is not more than waves[%d].percent %d: percentages are cumulative and must increase",
				w.Percent, i-1, ws[i-1].Percent)
		}
	}
	return errs
}

// The signed form (TUF custom metadata, docs/rollout.md). TUF signs
// canonical JSON, which has no fractions: durations are whole seconds and
// percentages integers.
type planJSON struct {
	Start    time.Time  `json:"start"`
	Waves    []waveJSON `json:"waves"`
	HaltedAt *time.Time `json:"halted_at,omitempty"`
}

type waveJSON struct {
	AfterSeconds int64 `json:"after_seconds"`
	Percent      int   `json:"percent"`
}

// MarshalJSON writes the signed form.
func (p Plan) MarshalJSON() ([]byte, error) {
	j := planJSON{Start: p.Start.UTC(), Waves: make([]waveJSON, len(p.Waves))}
	for i, w := range p.Waves {
		j.Waves[i] = waveJSON{AfterSeconds: int64(w.After / time.Second), Percent: w.Percent}
	}
	if p.Halted() {
		h := p.HaltedAt.UTC()
		j.HaltedAt = &h
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the signed form strictly (unknown fields are
// errors: a node must not take a release under rules it does not know)
// without validating; ParseJSON also validates.
func (p *Plan) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j planJSON
	if err := dec.Decode(&j); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &FieldError{te.Field, fmt.Sprintf("want %s, got JSON %s", te.Type, te.Value)}
		}
		return fmt.Errorf("%w: %w", ErrInvalidPlan, err)
	}
	*p = Plan{Start: j.Start.UTC(), Waves: make([]Wave, len(j.Waves))}
	for i, w := range j.Waves {
		if w.AfterSeconds > int64(MaxAfter/time.Second) || w.AfterSeconds < -int64(MaxAfter/time.Second) {
			// Out of range either way; clamp so the conversion cannot overflow.
			w.AfterSeconds = int64(MaxAfter/time.Second) + 1
		}
		p.Waves[i] = Wave{After: time.Duration(w.AfterSeconds) * time.Second, Percent: w.Percent}
	}
	if j.HaltedAt != nil {
		p.HaltedAt = j.HaltedAt.UTC()
	}
	return nil
}

// ParseJSON reads and validates the signed form.
func ParseJSON(b []byte) (*Plan, error) {
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// planFile is the plan file an operator writes (TOML).
type planFile struct {
	// Start is decoded by hand: decoding straight into a time.Time
	// loses whether the TOML date-time had an offset.
	Start any `toml:"start"`
	Waves []struct {
		After   string `toml:"after"`
		Percent int    `toml:"percent"`
	} `toml:"waves"`
}

// ParseFile reads a plan file: TOML (docs/rollout.md), or the signed JSON
// form when the file starts with "{" (so the output of
// 'sealift release rollout show --json' can be edited and set again).
// The start may be absent (zero): the caller then supplies it. Everything
// else is validated, and errors name the field.
func ParseFile(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plan file: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("plan file %s: %w", path, err)
	}
	return p, nil
}

// Parse is ParseFile on bytes.
func Parse(b []byte) (*Plan, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		var p Plan
		if err := json.Unmarshal(t, &p); err != nil {
			return nil, err
		}
		return &p, validateFile(&p)
	}
	var f planFile
	md, err := toml.Decode(string(b), &f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPlan, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: unknown key(s): %s", ErrInvalidPlan, strings.Join(keys, ", "))
	}
	p := &Plan{Waves: make([]Wave, len(f.Waves))}
	var errs []error
	switch v := f.Start.(type) {
	case nil:
	case time.Time:
		// A TOML local date-time has no offset; guessing the time zone
		// would move a fleet-wide schedule by hours.
		if strings.HasSuffix(v.Location().String(), "-local") {
			errs = append(errs, &FieldError{"start", "give an offset, e.g. 2026-12-01T09:00:00Z or 2026-12-01T09:00:00+01:00"})
		} else {
			p.Start = v.UTC()
		}
	case string:
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			errs = append(errs, &FieldError{"start", fmt.Sprintf("%q: want RFC 3339, e.g. 2026-12-01T09:00:00Z", v)})
		}
		p.Start = t.UTC()
	default:
		errs = append(errs, &FieldError{"start", fmt.Sprintf("want a date-time with an offset, got %T", v)})
	}
	for i, w := range f.Waves {
		p.Waves[i].Percent = w.Percent
		d, err := ParseDuration(w.After)
		if err != nil {
			errs = append(errs, &FieldError{fmt.Sprintf("waves[%d].after", i), err.Error()})
			p.Waves[i].After = -1 // keep the index; reported above
			continue
		}
		p.Waves[i].After = d
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, validateFile(p)
}

// validateFile validates everything but a missing start.
func validateFile(p *Plan) error {
	if p.Start.IsZero() {
		return errors.Join(validateWaves(p.Waves)...)
	}
	return p.Validate()
}

// ParseDuration reads a wave's after: Go's durations ("90m", "1h30m")
// plus whole days ("2d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty duration (want e.g. \"4h\" or \"2d\")")
	}
	neg := strings.HasPrefix(in, "-")
	rest := strings.TrimPrefix(in, "-")
	var d time.Duration
	if i := strings.IndexByte(rest, 'd'); i > 0 {
		n, err := strconv.ParseInt(rest[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("duration %q: days must be a whole number", s)
		}
		d = time.Duration(n) * 24 * time.Hour
		rest = rest[i+1:]
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || r < 0 {
			return 0, fmt.Errorf("duration %q: want e.g. \"90m\", \"4h\", \"2d\" or \"1d12h\"", s)
		}
		d += r
	}
	if neg {
		d = -d
	}
	return d, nil
}

// FormatDuration writes a duration the way plan files do: "1d12h",
// "4h", "90s" becomes "1m30s", zero is "0s".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.unit
		}
	}
	if d > 0 {
		fmt.Fprintf(&b, "%dns", d)
	}
	return b.String()
}

// FileText writes the plan as a plan file ParseFile reads back.
func (p *Plan) FileText() string {
	var b strings.Builder
	b.WriteString("# sealift rollout plan (docs/rollout.md)\n")
	if !p.Start.IsZero() {
		fmt.Fprintf(&b, "start = %s\n", p.Start.UTC().Format(time.RFC3339))
	}
	for _, w := range p.Waves {
		fmt.Fprintf(&b, "\n[[waves]]\nafter = %q\npercent = %d\n", FormatDuration(w.After), w.Percent)
	}
	return b.String()
}
