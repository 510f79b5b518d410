package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite docs/rollout-default.svg")

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// TestFleetMatchesPlan: a simulated fleet of 100,000 nodes with a fixed
// random source has, at every wave boundary, the plan's percentage
// eligible to within 1% of the fleet, and halfway through a wave about
// halfway between the two boundaries (the spread is even in time).
func TestFleetMatchesPlan(t *testing.T) {
	plans := map[string]Plan{
		"default": Default(t0),
		"uneven":  {Start: t0, Waves: []Wave{{0, 2}, {30 * time.Minute, 3}, {7 * day, 50}, {8 * day, 51}, {30 * day, 97}}},
	}
	for name, p := range plans {
		t.Run(name, func(t *testing.T) {
			sim, err := Simulate(p, 100_000, 42)
			if err != nil {
				t.Fatal(err)
			}
			var from time.Duration
			prev := 0
			for i, w := range p.Waves {
				got := sim.Fraction(w.After)
				if math.Abs(got-float64(w.Percent)/100) > 0.01 {
					t.Errorf("wave %d boundary %s: %.4f eligible, plan %d%%", i+1, FormatDuration(w.After), got, w.Percent)
				}
				// The exact seed count never exceeds the plan.
				if exact := p.Fraction(t0.Add(w.After)); exact > float64(w.Percent)/100 || exact < float64(w.Percent)/100-1.0/Seeds {
					t.Errorf("wave %d: seed share %.5f for %d%%", i+1, exact, w.Percent)
				}
				if w.After > from {
					mid := sim.Fraction(from + (w.After-from)/2)
					want := float64(prev+w.Percent) / 200
					if math.Abs(mid-want) > 0.01 {
						t.Errorf("wave %d middle: %.4f eligible, want about %.4f", i+1, mid, want)
					}
				}
				from, prev = w.After, w.Percent
			}
			if last := p.Waves[len(p.Waves)-1]; sim.Fraction(last.After+365*day) > float64(last.Percent)/100+0.01 {
				t.Errorf("seeds beyond the last wave became eligible")
			}
		})
	}
}

// TestOffsetWithinWave: a node's time depends on its offset inside its
// wave, not on its absolute seed. Bottlerocket's spacing by absolute seed
// puts the first seed of a late wave far into that wave's time span.
func TestOffsetWithinWave(t *testing.T) {
	p := Default(t0)
	lo3, hi3 := p.WaveSeeds(2) // wave 3: 5% .. 15%
	if lo3 != 102 || hi3 != 307 {
		t.Fatalf("wave 3 seeds %d..%d", lo3, hi3)
	}
	cases := []struct {
		name        string
		seed        int
		wave        int
		at          time.Time
		offset, pct int
	}{
		{"first seed of the plan", 0, 1, t0.Add(3 * time.Minute), 0, 5},
		{"last seed of wave 1 at its boundary", 19, 1, t0.Add(time.Hour), 19, 100},
		{"first seed of wave 2 just after wave 1", 20, 2, t0.Add(time.Hour + 132*time.Second), 0, 1},
		{"last seed of wave 2 at its boundary", 101, 2, t0.Add(4 * time.Hour), 81, 100},
		// Wave 3 spans 4h..24h = 72000s over 205 seeds: 352s a seed.
		{"first seed of wave 3 just after wave 2", 102, 3, t0.Add(4*time.Hour + 352*time.Second), 0, 0},
		{"early in wave 3", 105, 3, t0.Add(4*time.Hour + 1405*time.Second), 3, 1},
		{"last seed of wave 3", 306, 3, t0.Add(day), 204, 100},
		{"last seed of all", 2047, 7, t0.Add(6 * day), 2047 - 1843, 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := p.Eligibility(c.seed, t0)
			if err != nil {
				t.Fatal(err)
			}
			if e.Wave != c.wave || e.Waves != 7 || !e.At.Equal(c.at) || e.Offset != c.offset || e.PercentIntoWave() != c.pct || e.Eligible {
				t.Fatalf("%+v, want wave %d at %s offset %d %d%%", e, c.wave, c.at, c.offset, c.pct)
			}
			if e, _ := p.Eligibility(c.seed, c.at.Add(-time.Second)); e.Eligible {
				t.Fatal("eligible a second early")
			}
			if e, _ := p.Eligibility(c.seed, c.at); !e.Eligible {
				t.Fatal("not eligible at its time")
			}
		})
	}
	// Spacing by absolute seed would put seed 102 at 102/307 of wave 3's
	// span; by offset it is within one step of the boundary.
	e, _ := p.Eligibility(102, t0)
	if e.At.Sub(t0.Add(4*time.Hour)) > 10*time.Minute {
		t.Fatalf("first seed of wave 3 waits %s after wave 2", e.At.Sub(t0.Add(4*time.Hour)))
	}
}

func TestEligibilityString(t *testing.T) {
	p := Default(t0)
	p.Waves = p.Waves[:6] // up to 90%
	cases := []struct {
		seed int
		now  time.Time
		halt bool
		want string
	}{
		{731, t0, false, "eligible at 2026-12-02T19:55:19Z, wave 4 of 6, seed 731, 83% into the wave"},
		{731, t0.Add(3 * day), false, "eligible since 2026-12-02T19:55:19Z, wave 4 of 6, seed 731, 83% into the wave"},
		{731, t0.Add(3 * day), true, "rollout halted since 2026-12-01T12:00:00Z; this node: wave 4 of 6, seed 731, 83% into the wave"},
		{1900, t0.Add(300 * day), false, "not eligible until the plan changes: seed 1900 is beyond the plan's last wave (90% of the fleet, seeds 0-1842)"},
	}
	for _, c := range cases {
		q := p
		if c.halt {
			q.Halt(t0.Add(12 * time.Hour))
		}
		e, err := q.Eligibility(c.seed, c.now)
		if err != nil {
			t.Fatal(err)
		}
		if e.String() != c.want {
			t.Errorf("got  %s\nwant %s", e, c.want)
		}
		if e.Eligible && (c.halt || e.Beyond) {
			t.Errorf("eligible while halted or beyond the plan: %+v", e)
		}
	}
	if _, err := p.Eligibility(2048, t0); !errors.Is(err, ErrBadSeed) {
		t.Fatalf("seed 2048: %v", err)
	}
}

// TestHaltResume: a halt stops every node not yet eligible and even the
// eligible ones (the caller keeps nodes already on the release); resuming
// continues from the share that was eligible at the halt.
func TestHaltResume(t *testing.T) {
	cases := []struct {
		name           string
		halt, resume   time.Time
		wantStartShift time.Duration
	}{
		{"halted mid-rollout for a day", t0.Add(36 * time.Hour), t0.Add(60 * time.Hour), 24 * time.Hour},
		{"halted before the start, resumed before it", t0.Add(-2 * day), t0.Add(-day), 0},
		{"halted before the start, resumed after it", t0.Add(-2 * day), t0.Add(3 * time.Hour), 3 * time.Hour},
		{"halted after the end", t0.Add(10 * day), t0.Add(11 * day), day},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Default(t0)
			before := p.Fraction(c.halt)
			if !p.Halt(c.halt) || p.Halt(c.halt.Add(time.Hour)) || !p.HaltedAt.Equal(c.halt) {
				t.Fatalf("halt: %+v", p)
			}
			for seed := 0; seed < Seeds; seed += 97 {
				if e, _ := p.Eligibility(seed, c.halt.Add(time.Minute)); e.Eligible || !e.Halted {
					t.Fatalf("seed %d eligible while halted", seed)
				}
			}
			b, _ := json.Marshal(p)
			if !strings.Contains(string(b), `"halted_at"`) {
				t.Fatalf("halt not in the signed form: %s", b)
			}
			if !p.Resume(c.resume) || p.Resume(c.resume) || p.Halted() {
				t.Fatalf("resume: %+v", p)
			}
			if got := p.Start.Sub(t0); got != c.wantStartShift {
				t.Fatalf("start moved by %s, want %s", got, c.wantStartShift)
			}
			if c.halt.After(t0) {
				if after := p.Fraction(c.resume); after != before {
					t.Fatalf("eligible at resume %.4f, at halt %.4f", after, before)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	w := func(after time.Duration, pct int) Wave { return Wave{after, pct} }
	cases := []struct {
		name string
		plan Plan
		want string // field named in the error; "" valid
	}{
		{"default", Default(t0), ""},
		{"partial plan", Plan{Start: t0, Waves: []Wave{w(time.Hour, 10)}}, ""},
		{"everyone at once", Immediate(t0), ""},
		{"empty", Plan{Start: t0}, "waves: at least one wave"},
		{"no start", Plan{Waves: DefaultWaves()}, "start: required"},
		{"fractional start", Plan{Start: t0.Add(time.Millisecond), Waves: DefaultWaves()}, "start: "},
		{"unsorted waves", Plan{Start: t0, Waves: []Wave{w(4*time.Hour, 5), w(time.Hour, 10)}}, "waves[1].after: 1h is not later than waves[0].after 4h"},
		{"two waves at one time", Plan{Start: t0, Waves: []Wave{w(time.Hour, 5), w(time.Hour, 10)}}, "waves[1].after"},
		{"negative after", Plan{Start: t0, Waves: []Wave{w(-time.Hour, 5)}}, "waves[0].after: -1h is negative"},
		{"after too long", Plan{Start: t0, Waves: []Wave{w(400*day, 5)}}, "waves[0].after: 400d is longer"},
		{"sub-second after", Plan{Start: t0, Waves: []Wave{w(1500*time.Millisecond, 5)}}, "waves[0].after: 1.5s: whole seconds"},
		{"percent over 100", Plan{Start: t0, Waves: []Wave{w(time.Hour, 5), w(2*time.Hour, 101)}}, "waves[1].percent: 101 is outside 1..100"},
		{"percent zero", Plan{Start: t0, Waves: []Wave{w(time.Hour, 0)}}, "waves[0].percent: 0 is outside"},
		{"percent decreasing", Plan{Start: t0, Waves: []Wave{w(time.Hour, 50), w(2*time.Hour, 40)}}, "waves[1].percent: 40 is not more than waves[0].percent 50"},
		{"percent repeated", Plan{Start: t0, Waves: []Wave{w(time.Hour, 50), w(2*time.Hour, 50)}}, "waves[1].percent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.plan.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalidPlan) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is not a *FieldError", err)
			}
			if _, err := c.plan.Eligibility(0, t0); err == nil {
				t.Fatal("an invalid plan decided eligibility")
			}
		})
	}
}

func TestParse(t *testing.T) {
	def := Default(t0)
	signed, _ := json.Marshal(def)
	cases := []struct {
		name, in string
		want     *Plan
		err      string
	}{
		{"toml", `# canary first
start = 2026-12-01T00:00:00Z
[[waves]]
after = "1h"
percent = 1
[[waves]]
after = "4h"
percent = 5
[[waves]]
after = "24h"
percent = 15
[[waves]]
after = "2d"
percent = 40
[[waves]]
after = "4d"
percent = 60
[[waves]]
after = "5d"
percent = 90
[[waves]]
after = "6d"
percent = 100
`, &def, ""},
		{"toml written by FileText", def.FileText(), &def, ""},
		{"toml without start", "[[waves]]\nafter = \"2d12h\"\npercent = 100\n", &Plan{Waves: []Wave{{60 * time.Hour, 100}}}, ""},
		{"toml with offset", "start = 2026-12-01T01:00:00+01:00\n[[waves]]\nafter = \"0s\"\npercent = 100\n", &Plan{Start: t0, Waves: []Wave{{0, 100}}}, ""},
		{"start as text", "start = \"2026-12-01T00:00:00Z\"\n[[waves]]\nafter = \"0s\"\npercent = 100\n", &Plan{Start: t0, Waves: []Wave{{0, 100}}}, ""},
		{"bad start text", "start = \"tomorrow\"\n[[waves]]\nafter = \"0s\"\npercent = 100\n", nil, "start: \"tomorrow\""},
		{"signed json", string(signed), &def, ""},
		{"local time", "start = 2026-12-01T00:00:00\n[[waves]]\nafter = \"1h\"\npercent = 100\n", nil, "start: give an offset"},
		{"unknown key", "[[waves]]\nafter = \"1h\"\npercnt = 100\n", nil, "unknown key(s): waves.percnt"},
		{"bad duration", "[[waves]]\nafter = \"1h\"\npercent = 5\n[[waves]]\nafter = \"soon\"\npercent = 10\n", nil, "waves[1].after: duration \"soon\""},
		{"fractional percent", "[[waves]]\nafter = \"1h\"\npercent = 0.5\n", nil, "percent"},
		{"decreasing", "[[waves]]\nafter = \"1h\"\npercent = 5\n[[waves]]\nafter = \"2h\"\npercent = 4\n", nil, "waves[1].percent"},
		{"empty file", "", nil, "waves: at least one wave"},
		{"json unknown field", `{"start":"2026-12-01T00:00:00Z","waves":[{"after_seconds":0,"percent":100}],"max_version":"2"}`, nil, "unknown field"},
		{"json percent as text", `{"start":"2026-12-01T00:00:00Z","waves":[{"after_seconds":0,"percent":"100"}]}`, nil, "waves.percent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse([]byte(c.in))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrInvalidPlan) {
					t.Fatalf("got %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(c.want)
			if !bytes.Equal(a, b) {
				t.Fatalf("got  %s\nwant %s", a, b)
			}
		})
	}
}

// TestSignedForm pins the JSON inside the TUF target: integers only
// (canonical JSON has no fractions), and it reads back the same.
func TestSignedForm(t *testing.T) {
	p := Default(t0)
	p.Waves = p.Waves[:2]
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"start":"2026-12-01T00:00:00Z","waves":[{"after_seconds":3600,"percent":1},{"after_seconds":14400,"percent":5}]}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	back, err := ParseJSON(b)
	if err != nil || back.Start != p.Start || len(back.Waves) != 2 || back.Waves[1] != p.Waves[1] {
		t.Fatalf("%+v %v", back, err)
	}
	if _, err := ParseJSON([]byte(`{"start":"2026-12-01T00:00:00Z","waves":[{"after_seconds":99999999999999,"percent":1}]}`)); err == nil ||
		!strings.Contains(err.Error(), "waves[0].after") {
		t.Fatalf("huge after: %v", err)
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1h": time.Hour, "90m": 90 * time.Minute, "2d": 2 * day, "1d12h": 36 * time.Hour, "0": 0, "-1d": -day, "1d30s": day + 30*time.Second,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "xd", "1d-1h", "soon"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
	for d, want := range map[time.Duration]string{0: "0s", time.Hour: "1h", 36 * time.Hour: "1d12h", 90 * time.Second: "1m30s", -day: "-1d"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestNewSeed(t *testing.T) {
	seen := map[int]bool{}
	r := bytes.NewReader(bytes.Repeat([]byte{0xff, 0xff, 0x00, 0x00, 0x12, 0x34}, 1))
	for range 3 {
		s, err := NewSeed(r)
		if err != nil || CheckSeed(s) != nil {
			t.Fatalf("%d %v", s, err)
		}
		seen[s] = true
	}
	if !seen[2047] || !seen[0] || !seen[0x1234%2048] {
		t.Fatalf("%v", seen)
	}
	if _, err := NewSeed(bytes.NewReader(nil)); err == nil {
		t.Fatal("no entropy, no error")
	}
}

// TestDefaultChart regenerates docs/rollout-default.svg (go test
// ./updater/rollout -update) and compares it with the committed file.
func TestDefaultChart(t *testing.T) {
	const path = "../../docs/rollout-default.svg"
	sim, err := Simulate(Default(t0), 100_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := sim.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("%s differs from the chart of the default plan; regenerate it with go test ./updater/rollout -update", path)
	}
	if !strings.Contains(b.String(), "6d 100%") || !strings.HasPrefix(b.String(), "<svg") {
		t.Fatal("chart lacks the plan's labels")
	}
}
