package state

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// HoldKind is what an operator hold keeps the node from doing.
type HoldKind string

// Hold kinds (docs/agent.md, "Operator holds").
const (
	// HoldSkip: never take Version; other releases, newer or older, are
	// taken as usual. One per version.
	HoldSkip HoldKind = "skip"
	// HoldPin: take no release other than Version. At most one.
	HoldPin HoldKind = "pin"
	// HoldPause: take nothing, and the agent reboots into nothing, until
	// Until (zero: until cleared). At most one.
	HoldPause HoldKind = "pause"
)

// HoldKinds lists the kinds in the order holds are kept and shown.
var HoldKinds = []HoldKind{HoldPause, HoldPin, HoldSkip}

// ParseHoldKind returns the kind named s.
func ParseHoldKind(s string) (HoldKind, error) {
	for _, k := range HoldKinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("hold kind %q: want skip, pin or pause", s)
}

// Hold is one operator hold: what it holds, who set it, when and why.
type Hold struct {
	Kind HoldKind `json:"kind"`
	// Version is the skipped or pinned release; empty for a pause.
	Version string `json:"version,omitempty"`
	// Until ends a pause by itself; zero means until it is cleared.
	Until time.Time `json:"until,omitzero"`
	// Reason is the operator's own words, or what set the hold (a
	// cancel, a rollback).
	Reason string `json:"reason,omitempty"`
	// By is who set it, as the CLI or API caller named themselves.
	By    string    `json:"by,omitempty"`
	Since time.Time `json:"since"`
}

// Expired says whether a pause has ended by itself at now.
func (h Hold) Expired(now time.Time) bool {
	return h.Kind == HoldPause && !h.Until.IsZero() && !now.Before(h.Until)
}

// Name is the hold as the CLI names it: "skip 1.2.0", "pin 1.2.0",
// "pause", "pause until 2026-12-01T00:00:00Z".
func (h Hold) Name() string {
	switch {
	case h.Kind == HoldPause && h.Until.IsZero():
		return "pause"
	case h.Kind == HoldPause:
		return "pause until " + h.Until.UTC().Format(time.RFC3339)
	}
	return string(h.Kind) + " " + h.Version
}

// Who is who set the hold, for messages.
func (h Hold) Who() string {
	if h.By != "" {
		return h.By
	}
	return "the operator"
}

// Detail is the hold's reason and times, for messages: "reason, since
// T" or "since T, until U".
func (h Hold) Detail() string {
	var parts []string
	if h.Reason != "" {
		parts = append(parts, h.Reason)
	}
	parts = append(parts, "since "+h.Since.UTC().Format(time.RFC3339))
	if h.Kind == HoldPause && !h.Until.IsZero() {
		parts = append(parts, "until "+h.Until.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, ", ")
}

// Origin is who set the hold, when, and why: "set by alice at T: CVE
// review".
func (h Hold) Origin() string {
	s := fmt.Sprintf("set by %s at %s", h.Who(), h.Since.UTC().Format(time.RFC3339))
	if h.Reason != "" {
		s += ": " + h.Reason
	}
	return s
}

// ClearCommand is the command that lifts the hold.
func (h Hold) ClearCommand() string {
	if h.Kind == HoldSkip {
		return "sealift hold clear skip " + h.Version
	}
	return "sealift hold clear " + string(h.Kind)
}

// Effect says in plain words what the hold does.
func (h Hold) Effect() string {
	switch h.Kind {
	case HoldSkip:
		return fmt.Sprintf("%s is not taken; other releases are ('%s' allows it)", h.Version, h.ClearCommand())
	case HoldPin:
		return fmt.Sprintf("no release other than %s is taken ('%s' lifts it)", h.Version, h.ClearCommand())
	}
	return fmt.Sprintf("no release is taken, and the agent neither checks, stages nor reboots into one ('%s' resumes updates)", h.ClearCommand())
}

// Against says why h keeps the node from taking version at now, or ""
// when it does not.
func (h Hold) Against(version string, now time.Time) string {
	switch {
	case h.Kind == HoldPause && !h.Expired(now):
		return fmt.Sprintf("updates are paused by %s (%s); '%s' resumes them", h.Who(), h.Detail(), h.ClearCommand())
	case h.Kind == HoldSkip && h.Version == version:
		return fmt.Sprintf("%s is skipped by %s (%s); '%s' allows it", version, h.Who(), h.Detail(), h.ClearCommand())
	case h.Kind == HoldPin && h.Version != version:
		return fmt.Sprintf("the node is pinned to %s by %s (%s); '%s' lifts it", h.Version, h.Who(), h.Detail(), h.ClearCommand())
	}
	return ""
}

// ActiveHolds returns the holds in force at now: all but a pause that
// has ended.
func ActiveHolds(hs []Hold, now time.Time) []Hold {
	var out []Hold
	for _, h := range hs {
		if !h.Expired(now) {
			out = append(out, h)
		}
	}
	return out
}

// FindHold returns the hold of kind (and, for a skip, version) in hs.
func FindHold(hs []Hold, kind HoldKind, version string) *Hold {
	for i := range hs {
		if hs[i].Kind == kind && (kind != HoldSkip || hs[i].Version == version) {
			return &hs[i]
		}
	}
	return nil
}

// HoldAgainst returns the first hold in hs that keeps the node from
// taking version at now (a pause, a skip of version, a pin to another
// version) and why; nil and "" when none does.
func HoldAgainst(hs []Hold, version string, now time.Time) (*Hold, string) {
	for i := range hs {
		if why := hs[i].Against(version, now); why != "" {
			return &hs[i], why
		}
	}
	return nil, ""
}

// SetHold adds h, replacing the pause or pin, or the skip of the same
// version, it takes the place of (returned; nil when none).
func (s *State) SetHold(h Hold) *Hold {
	var replaced *Hold
	if old := FindHold(s.Holds, h.Kind, h.Version); old != nil {
		cp := *old
		replaced = &cp
		*old = h
	} else {
		s.Holds = append(s.Holds, h)
	}
	sortHolds(s.Holds)
	return replaced
}

// ClearHolds removes the holds match selects and returns them.
func (s *State) ClearHolds(match func(Hold) bool) []Hold {
	var kept, removed []Hold
	for _, h := range s.Holds {
		if match(h) {
			removed = append(removed, h)
		} else {
			kept = append(kept, h)
		}
	}
	s.Holds = kept
	return removed
}

// sortHolds keeps holds in HoldKinds order, skips by version.
func sortHolds(hs []Hold) {
	rank := func(k HoldKind) int {
		for i, x := range HoldKinds {
			if x == k {
				return i
			}
		}
		return len(HoldKinds)
	}
	sort.SliceStable(hs, func(i, j int) bool {
		if a, b := rank(hs[i].Kind), rank(hs[j].Kind); a != b {
			return a < b
		}
		return hs[i].Version < hs[j].Version
	})
}
