// Package schedule computes maintenance windows: weekly windows given by
// days, a local start time, a length and a time zone. It is correct across
// daylight-saving changes and for windows that cross midnight or the end
// of the week, because it works on the actual local dates around an
// instant rather than on offsets from a week start.
//
// Semantics, chosen so a window is never lost or doubled:
//   - the length is elapsed time: a 2h window that spans a DST change is
//     still 2 hours long;
//   - a start time that does not exist on a given day (inside a
//     spring-forward gap) moves forward by the size of the gap (Go's
//     normalisation: 02:30 becomes 03:30);
//   - a start time that exists twice (fall-back) takes the first one.
package schedule

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "time/tzdata" // time zones even on a host without /usr/share/zoneinfo
)

// Window is one weekly maintenance window.
type Window struct {
	Days     []time.Weekday
	Hour     int
	Minute   int
	Length   time.Duration
	Location *time.Location
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// Parse builds a window from config values; errors name the field under
// prefix (e.g. "window[0]").
func Parse(prefix string, days []string, start, length, zone string) (Window, error) {
	var w Window
	var errs []error
	if len(days) == 0 {
		errs = append(errs, fmt.Errorf("%s.days: at least one day (mon..sun)", prefix))
	}
	seen := map[time.Weekday]bool{}
	for _, d := range days {
		wd, ok := parseDay(d)
		if !ok {
			errs = append(errs, fmt.Errorf("%s.days: unknown day %q (mon, tue, wed, thu, fri, sat, sun)", prefix, d))
			continue
		}
		if !seen[wd] {
			seen[wd] = true
			w.Days = append(w.Days, wd)
		}
	}
	sort.Slice(w.Days, func(i, j int) bool { return w.Days[i] < w.Days[j] })
	h, m, ok := parseClock(start)
	if !ok {
		errs = append(errs, fmt.Errorf("%s.start: %q is not a time of day HH:MM", prefix, start))
	}
	w.Hour, w.Minute = h, m
	l, err := time.ParseDuration(length)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("%s.length: %q is not a duration (e.g. 2h, 90m)", prefix, length))
	case l <= 0 || l > 7*24*time.Hour:
		errs = append(errs, fmt.Errorf("%s.length: %v must be positive and at most a week", prefix, l))
	}
	w.Length = l
	if zone == "" {
		zone = "UTC"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s.time_zone: unknown time zone %q", prefix, zone))
	}
	w.Location = loc
	if err := errors.Join(errs...); err != nil {
		return Window{}, err
	}
	return w, nil
}

// parseDay accepts "mon" or "monday", any case.
func parseDay(d string) (time.Weekday, bool) {
	name := strings.ToLower(strings.TrimSpace(d))
	if wd, ok := dayNames[name]; ok {
		return wd, true
	}
	for short, wd := range dayNames {
		if name == strings.ToLower(wd.String()) && strings.HasPrefix(name, short) {
			return wd, true
		}
	}
	return 0, false
}

func parseClock(s string) (int, int, bool) {
	hs, ms, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(ms) != 2 || len(hs) == 0 || len(hs) > 2 {
		return 0, 0, false
	}
	h, err1 := strconv.Atoi(hs)
	m, err2 := strconv.Atoi(ms)
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		return 0, 0, false
	}
	return h, m, true
}

// occurrences returns the window's starts on the local dates from 7 days
// before t to 8 days after, in order.
func (w Window) occurrences(t time.Time) []time.Time {
	lt := t.In(w.Location)
	var out []time.Time
	for off := -7; off <= 8; off++ {
		d := time.Date(lt.Year(), lt.Month(), lt.Day()+off, 12, 0, 0, 0, w.Location) // noon: never in a DST gap
		for _, wd := range w.Days {
			if d.Weekday() == wd {
				out = append(out, w.startOn(d))
			}
		}
	}
	return out
}

// startOn is the window's start on the local date of d. A start inside a
// spring-forward gap moves forward by the gap (02:30 -> 03:30): the wall
// time is read with the offset in force before the gap.
func (w Window) startOn(d time.Time) time.Time {
	s := time.Date(d.Year(), d.Month(), d.Day(), w.Hour, w.Minute, 0, 0, w.Location)
	if s.Hour() == w.Hour && s.Minute() == w.Minute {
		return s
	}
	_, before := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, w.Location).Zone()
	wall := time.Date(d.Year(), d.Month(), d.Day(), w.Hour, w.Minute, 0, 0, time.UTC)
	return wall.Add(-time.Duration(before) * time.Second).In(w.Location)
}

// Contains reports whether t is inside an occurrence of the window.
func (w Window) Contains(t time.Time) bool {
	_, _, ok := w.current(t)
	return ok
}

func (w Window) current(t time.Time) (time.Time, time.Time, bool) {
	for _, s := range w.occurrences(t) {
		if !t.Before(s) && t.Before(s.Add(w.Length)) {
			return s, s.Add(w.Length), true
		}
	}
	return time.Time{}, time.Time{}, false
}

// Next returns the occurrence that contains t, or else the first one
// starting after t.
func (w Window) Next(t time.Time) (start, end time.Time) {
	if s, e, ok := w.current(t); ok {
		return s, e
	}
	for _, s := range w.occurrences(t) {
		if s.After(t) {
			return s, s.Add(w.Length)
		}
	}
	// Unreachable for a valid window: some day of the next week matches.
	return time.Time{}, time.Time{}
}

// Windows is a union of windows; empty means "any time".
type Windows []Window

// Open reports whether t is inside any window (always, when there are none).
func (ws Windows) Open(t time.Time) bool {
	if len(ws) == 0 {
		return true
	}
	for _, w := range ws {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// Next returns the earliest window occurrence that contains t or starts
// after it; with no windows, t itself (and no end).
func (ws Windows) Next(t time.Time) (start, end time.Time) {
	if len(ws) == 0 {
		return t, time.Time{}
	}
	for _, w := range ws {
		s, e := w.Next(t)
		if start.IsZero() || s.Before(start) {
			start, end = s, e
		}
	}
	return start, end
}
