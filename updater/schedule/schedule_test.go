package schedule

import (
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, days []string, start, length, zone string) Window {
	t.Helper()
	w, err := Parse("window[0]", days, start, length, zone)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func at(t *testing.T, zone, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name                      string
		days                      []string
		start, length, zone, want string
	}{
		{"valid", []string{"Mon", "friday"}, "02:00", "2h", "Europe/Berlin", ""},
		{"no days", nil, "02:00", "2h", "UTC", "window[0].days"},
		{"bad day", []string{"funday"}, "02:00", "2h", "UTC", `unknown day "funday"`},
		{"bad start", []string{"mon"}, "25:00", "2h", "UTC", "window[0].start"},
		{"start without minutes", []string{"mon"}, "2", "2h", "UTC", "window[0].start"},
		{"bad length", []string{"mon"}, "02:00", "2 hours", "UTC", "window[0].length"},
		{"zero length", []string{"mon"}, "02:00", "0s", "UTC", "must be positive"},
		{"too long", []string{"mon"}, "02:00", "200h", "UTC", "at most a week"},
		{"bad zone", []string{"mon"}, "02:00", "2h", "Mars/Olympus", `unknown time zone "Mars/Olympus"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("window[0]", c.days, c.start, c.length, c.zone)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestWindows(t *testing.T) {
	cases := []struct {
		name      string
		w         Window
		zone, now string
		open      bool
		nextStart string // local time in zone
		nextEnd   string
	}{
		// Plain: Tuesday 02:00-04:00 UTC.
		{"inside", mustParse(t, []string{"tue"}, "02:00", "2h", "UTC"), "UTC", "2026-11-24 03:00", true, "2026-11-24 02:00", "2026-11-24 04:00"},
		{"before", mustParse(t, []string{"tue"}, "02:00", "2h", "UTC"), "UTC", "2026-11-24 01:59", false, "2026-11-24 02:00", "2026-11-24 04:00"},
		{"end is exclusive", mustParse(t, []string{"tue"}, "02:00", "2h", "UTC"), "UTC", "2026-11-24 04:00", false, "2026-12-01 02:00", "2026-12-01 04:00"},
		// Crossing midnight: Friday 23:00 + 3h ends Saturday 02:00.
		{"across midnight, after it", mustParse(t, []string{"fri"}, "23:00", "3h", "UTC"), "UTC", "2026-11-28 01:30", true, "2026-11-27 23:00", "2026-11-28 02:00"},
		// Crossing the week's end: Sunday 22:00 + 4h ends Monday 02:00.
		{"across the week's end", mustParse(t, []string{"sun"}, "22:00", "4h", "UTC"), "UTC", "2026-11-30 01:00", true, "2026-11-29 22:00", "2026-11-30 02:00"},
		// New York springs forward 2026-03-08 02:00 -> 03:00: 02:30 does not exist.
		{"NY start in the spring gap moves by the gap", mustParse(t, []string{"sun"}, "02:30", "1h", "America/New_York"), "America/New_York", "2026-03-08 01:00", false, "2026-03-08 03:30", "2026-03-08 04:30"},
		{"NY window across spring forward is 2h elapsed", mustParse(t, []string{"sun"}, "01:00", "2h", "America/New_York"), "America/New_York", "2026-03-08 03:30", true, "2026-03-08 01:00", "2026-03-08 04:00"},
		// New York falls back 2026-11-01 02:00 -> 01:00: 01:30 exists twice; the first counts.
		{"NY ambiguous start takes the first", mustParse(t, []string{"sun"}, "01:30", "30m", "America/New_York"), "America/New_York", "2026-11-01 00:00", false, "2026-11-01 01:30", "2026-11-01 01:00"},
		{"NY local wall time holds across the change", mustParse(t, []string{"mon"}, "09:00", "1h", "America/New_York"), "America/New_York", "2026-11-02 09:30", true, "2026-11-02 09:00", "2026-11-02 10:00"},
		// Berlin: summer time 2026-03-29 02:00 -> 03:00, back 2026-10-25 03:00 -> 02:00.
		{"Berlin daily window on spring day", mustParse(t, []string{"sun"}, "02:15", "1h", "Europe/Berlin"), "Europe/Berlin", "2026-03-29 03:20", true, "2026-03-29 03:15", "2026-03-29 04:15"},
		{"Berlin window across fall back is elapsed time", mustParse(t, []string{"sun"}, "01:30", "2h", "Europe/Berlin"), "Europe/Berlin", "2026-10-25 01:59", true, "2026-10-25 01:30", "2026-10-25 02:30"},
		{"Berlin next week after the change", mustParse(t, []string{"sat"}, "22:00", "2h", "Europe/Berlin"), "Europe/Berlin", "2026-10-26 12:00", false, "2026-10-31 22:00", "2026-11-01 00:00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := at(t, c.zone, c.now)
			if got := c.w.Contains(now); got != c.open {
				t.Fatalf("Contains(%v) = %v", now, got)
			}
			s, e := c.w.Next(now)
			ws, we := at(t, c.zone, c.nextStart), at(t, c.zone, c.nextEnd)
			if c.name == "NY ambiguous start takes the first" {
				// 01:30 EDT + 30m = 01:00 EST: ParseInLocation picks EDT for
				// 01:00, so compare the end by elapsed time instead.
				we = ws.Add(30 * time.Minute)
			}
			if c.name == "Berlin window across fall back is elapsed time" {
				we = ws.Add(2 * time.Hour) // 01:30 CEST + 2h = 02:30 CET
			}
			if !s.Equal(ws) || !e.Equal(we) {
				t.Fatalf("Next(%v) = %v .. %v, want %v .. %v", now, s, e, ws, we)
			}
		})
	}
}

func TestUnion(t *testing.T) {
	ws := Windows{
		mustParse(t, []string{"sat", "sun"}, "01:00", "4h", "Europe/Berlin"),
		mustParse(t, []string{"wed"}, "12:00", "1h", "America/New_York"),
	}
	now := at(t, "UTC", "2026-11-24 12:00") // Tuesday
	if ws.Open(now) {
		t.Fatal("open on Tuesday noon")
	}
	s, _ := ws.Next(now)
	if want := at(t, "America/New_York", "2026-11-25 12:00"); !s.Equal(want) {
		t.Fatalf("next %v, want %v", s, want)
	}
	if !(Windows{}).Open(now) {
		t.Fatal("no windows must mean always open")
	}
}

// TestFallBackElapsed checks the Berlin window across the repeated hour by
// instants, which wall times cannot name unambiguously: 01:30 CEST + 2h
// ends at 02:30 CET (01:30 UTC).
func TestFallBackElapsed(t *testing.T) {
	w := mustParse(t, []string{"sun"}, "01:30", "2h", "Europe/Berlin")
	for _, c := range []struct {
		utc  string
		open bool
	}{
		{"2026-10-24 23:29", false}, // 01:29 CEST
		{"2026-10-24 23:30", true},  // 01:30 CEST
		{"2026-10-25 00:45", true},  // 02:45 CEST
		{"2026-10-25 01:20", true},  // 02:20 CET, the repeated hour
		{"2026-10-25 01:30", false}, // 02:30 CET: 2h elapsed
	} {
		if got := w.Contains(at(t, "UTC", c.utc)); got != c.open {
			t.Errorf("%s UTC: open=%v, want %v", c.utc, got, c.open)
		}
	}
}
