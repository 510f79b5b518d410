package updater

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"sealift/signing"
	"sealift/updater/rollout"
	"sealift/updater/state"
)

// ReleaseMeta is the signed custom metadata of a release's TUF target.
// Everything a node decides on comes from here, never from the registry.
type ReleaseMeta struct {
	Version string `json:"version"`
	Variant string `json:"variant"`
	Arch    string `json:"arch"`
	// Recalled releases are never installed; nodes running one may move
	// to an older release (see docs/publishing.md).
	Recalled bool `json:"recalled,omitempty"`
	// Rollout stages the release in waves (docs/rollout.md); nil means
	// every node may take it at once.
	Rollout *rollout.Plan `json:"rollout,omitempty"`
}

// TargetName is the TUF target name of a release.
func TargetName(variant, arch, version string) string {
	return path.Join(variant, arch, version+".json")
}

// Release is one signed release a node may consider.
type Release struct {
	Target string // TUF target name
	Meta   ReleaseMeta
	Info   signing.TargetInfo
	// RolloutErr is why the signed rollout plan cannot be used (a plan
	// from a newer publisher, or an invalid one); such a release is not
	// taken, since its publisher meant it for only part of the fleet.
	RolloutErr error `json:"-"`
}

// Trust is the signed-metadata client (signing.Client).
type Trust interface {
	Refresh() error
	Targets() (map[string]signing.TargetInfo, error)
	Fetch(name string) ([]byte, signing.TargetInfo, error)
}

// CheckOptions is what a node knows about itself.
type CheckOptions struct {
	Variant, Arch  string
	AllowDowngrade bool
	// Seed overrides the node's rollout seed (config node.seed); nil
	// uses the seed kept in the state, drawn and saved on first use.
	Seed *int
}

// CheckResult says which release a node should take, or why none.
type CheckResult struct {
	Running   string   `json:"running_version,omitempty"`
	Newest    *Release `json:"newest,omitempty"` // newest release not recalled, failed or held here (the pinned one under a pin), even if not taken
	Take      *Release `json:"take,omitempty"`   // the release to install; nil when none
	Reason    string   `json:"reason"`
	Downgrade bool     `json:"downgrade,omitempty"`
	// Seed is the node's rollout seed; SeedFrom says where it came from
	// (SeedFromConfig, SeedFromState, SeedFromNew).
	Seed     int    `json:"seed"`
	SeedFrom string `json:"seed_from,omitempty"`
	// Rollout is where this node stands in the rollout of Newest: its
	// wave, its offset in the wave, when it is eligible (Rollout.At) or
	// that the rollout is halted. nil when Newest has no plan.
	Rollout *rollout.Eligibility `json:"rollout,omitempty"`
	// Holds are the operator's holds in force, which the decision
	// honoured.
	Holds []state.Hold `json:"holds,omitempty"`
	// Staged is the verdict on the update staged on the node (flipped,
	// not booted yet): may it still be booted? It honours the holds
	// too. nil when none is staged.
	Staged *StagedVerdict `json:"staged,omitempty"`
}

// Where CheckResult.Seed came from.
const (
	SeedFromConfig = "config" // node.seed in the config
	SeedFromState  = "state"  // drawn earlier and kept in the state
	SeedFromNew    = "new"    // drawn by this check and saved in the state
)

// ErrNoRelease is returned by Update when there is nothing to install.
var ErrNoRelease = errors.New("no release to install")

// releases lists the signed releases for this node's variant and arch.
func releases(targets map[string]signing.TargetInfo, o CheckOptions) (all, eligible []Release, err error) {
	for name, info := range targets {
		if len(info.Custom) == 0 {
			continue // not a sealift release
		}
		// The plan is parsed on its own so that a plan this node cannot
		// use keeps the release visible (and not taken) instead of
		// making it vanish.
		var wire struct {
			ReleaseMeta
			Rollout json.RawMessage `json:"rollout,omitempty"`
		}
		if err := json.Unmarshal(info.Custom, &wire); err != nil || wire.Version == "" {
			continue
		}
		m := wire.ReleaseMeta
		var planErr error
		if len(wire.Rollout) > 0 && string(wire.Rollout) != "null" {
			m.Rollout, planErr = rollout.ParseJSON(wire.Rollout)
		}
		if m.Variant != o.Variant || m.Arch != o.Arch {
			continue
		}
		if name != TargetName(m.Variant, m.Arch, m.Version) {
			// A signed target whose name and metadata disagree is a
			// publishing error; refusing it keeps one name per version.
			return nil, nil, fmt.Errorf("signed target %q carries metadata for %s/%s %s", name, m.Variant, m.Arch, m.Version)
		}
		r := Release{Target: name, Meta: m, Info: info, RolloutErr: planErr}
		all = append(all, r)
		if !m.Recalled {
			eligible = append(eligible, r)
		}
	}
	sort.Slice(eligible, func(i, j int) bool { return CompareVersions(eligible[i].Meta.Version, eligible[j].Meta.Version) > 0 })
	return all, eligible, nil
}

// decide picks the release to take given the running version, the
// node's rollout seed and the time. Releases in failed fell back on this
// node and are not taken again. A release is available to the node when
// it is not recalled, did not fail here, is not skipped by an operator
// hold, and has no rollout plan or one under which the node is eligible
// now; the node takes the newest available release that is newer than
// the running one, which may be older than the newest release while that
// one's rollout has not reached the node. A pin narrows the choice to
// the pinned release (decidePinned); a pause takes nothing, and says
// what would be taken without it.
func decide(targets map[string]signing.TargetInfo, running string, failed map[string]*state.Outcome, holds []state.Hold, o CheckOptions, seed int, now time.Time) (*CheckResult, error) {
	all, eligible, err := releases(targets, o)
	if err != nil {
		return nil, err
	}
	holds = state.ActiveHolds(holds, now)
	res := &CheckResult{Running: running, Seed: seed, Holds: holds}
	defer paused(res, holds, now) // deferred first, so it runs last
	if pin := state.FindHold(holds, state.HoldPin, ""); pin != nil {
		decidePinned(res, all, failed, holds, *pin, o, seed, now)
		return res, nil
	}
	var skipped, held []string
	notRecalled := len(eligible)
	kept := eligible[:0]
	for _, r := range eligible {
		v := r.Meta.Version
		if f := failed[v]; f != nil {
			skipped = append(skipped, fmt.Sprintf("%s (failed here: %s)", v, f.Reason))
			continue
		}
		if h := state.FindHold(holds, state.HoldSkip, v); h != nil {
			// Said when it would otherwise be a candidate: a skip of a
			// release the node has long left behind is not news.
			if running == "" || o.AllowDowngrade || CompareVersions(v, running) > 0 {
				held = append(held, h.Against(v, now))
			}
			continue
		}
		kept = append(kept, r)
	}
	eligible = kept
	defer func() {
		if len(skipped) > 0 {
			res.Reason += "; skipped " + strings.Join(skipped, ", ") + " ('sealift retry VERSION' allows it again)"
		}
		for _, h := range held {
			res.Reason += "; " + h
		}
	}()
	if len(eligible) == 0 {
		res.Reason = fmt.Sprintf("no signed release for variant %q, arch %q", o.Variant, o.Arch)
		switch {
		case notRecalled > 0: // failed or skipped: said below
			res.Reason = fmt.Sprintf("no signed release for variant %q, arch %q that this node may take", o.Variant, o.Arch)
		case len(all) > 0:
			res.Reason = fmt.Sprintf("every signed release for variant %q, arch %q is recalled", o.Variant, o.Arch)
		}
		return res, nil
	}
	newest := eligible[0]
	res.Newest = &newest
	var newestWait string
	res.Rollout, newestWait = availability(newest, seed, now)
	var best *Release // the newest release available to this node now
	for i := range eligible {
		if _, wait := availability(eligible[i], seed, now); wait == "" {
			best = &eligible[i]
			break
		}
	}
	notYet := func() string {
		return fmt.Sprintf("%s is not yet available to this node: %s", newest.Meta.Version, newestWait)
	}
	runningRecalled := false
	for _, r := range all {
		if r.Meta.Version == running && r.Meta.Recalled {
			runningRecalled = true
		}
	}
	switch {
	case running == "" && best != nil:
		res.Take, res.Reason = best, "no release is running"
		if best.Target != newest.Target {
			res.Reason += "; " + notYet()
		}
	case running == "":
		res.Reason = "no release is running; " + notYet()
	case runningRecalled && best != nil:
		// Leaving a recalled release goes by the same rollout rules: the
		// node takes the newest release it may take now, older or not.
		res.Take = best
		res.Downgrade = CompareVersions(best.Meta.Version, running) < 0
		res.Reason = fmt.Sprintf("the running %s is recalled; %s is the newest release not recalled that this node may take", running, best.Meta.Version)
	case runningRecalled:
		res.Reason = fmt.Sprintf("the running %s is recalled, but no other release is available to this node yet; %s", running, notYet())
	default:
		switch c := CompareVersions(newest.Meta.Version, running); {
		case c == 0:
			res.Reason = fmt.Sprintf("up to date: %s is the newest release", running)
		case c > 0 && best != nil && CompareVersions(best.Meta.Version, running) > 0:
			res.Take, res.Reason = best, fmt.Sprintf("%s is newer than the running %s", best.Meta.Version, running)
			if best.Target != newest.Target {
				res.Reason += "; " + notYet()
			}
		case c > 0:
			res.Reason = fmt.Sprintf("%s is newer than the running %s but not yet available to this node: %s", newest.Meta.Version, running, newestWait)
		case o.AllowDowngrade && best != nil:
			res.Take, res.Downgrade = best, true
			res.Reason = fmt.Sprintf("downgrade from %s to %s allowed by the operator", running, best.Meta.Version)
		case o.AllowDowngrade:
			res.Reason = fmt.Sprintf("downgrade from %s allowed by the operator, but %s", running, notYet())
		default:
			res.Reason = fmt.Sprintf("the running %s is newer than the newest signed release %s; not downgrading (--allow-downgrade to force)", running, newest.Meta.Version)
		}
	}
	return res, nil
}

// paused takes nothing while a pause is in force, saying what would be
// taken without it.
func paused(res *CheckResult, holds []state.Hold, now time.Time) {
	p := state.FindHold(holds, state.HoldPause, "")
	if p == nil {
		return
	}
	why := p.Against("", now)
	if res.Take == nil {
		res.Reason += "; " + why
		return
	}
	res.Reason = fmt.Sprintf("%s; without the pause %s would be taken: %s", why, res.Take.Meta.Version, res.Reason)
	res.Take, res.Downgrade = nil, false
}

// decidePinned decides under a pin: the pinned release is taken when it
// is available and the usual rules allow it (newer than the running
// release, or older with --allow-downgrade or when the running release
// is recalled); no other release is.
func decidePinned(res *CheckResult, all []Release, failed map[string]*state.Outcome, holds []state.Hold, pin state.Hold, o CheckOptions, seed int, now time.Time) {
	v, running := pin.Version, res.Running
	pinned := fmt.Sprintf("the node is pinned to %s by %s (%s; '%s' lifts the pin)", v, pin.Who(), pin.Detail(), pin.ClearCommand())
	var r *Release
	runningRecalled := false
	for i := range all {
		if all[i].Meta.Version == v {
			r = &all[i]
		}
		if all[i].Meta.Version == running && all[i].Meta.Recalled {
			runningRecalled = true
		}
	}
	why := ""
	switch {
	case r == nil:
		why = fmt.Sprintf("%s is not a signed release for variant %q, arch %q", v, o.Variant, o.Arch)
	case r.Meta.Recalled:
		why = v + " is recalled"
	case failed[v] != nil:
		why = fmt.Sprintf("%s failed here (%s); 'sealift retry %s' allows it again", v, failed[v].Reason, v)
	default:
		if h := state.FindHold(holds, state.HoldSkip, v); h != nil {
			why = h.Against(v, now)
		}
	}
	if why != "" {
		res.Reason = pinned + ", but " + why
		return
	}
	pr := *r
	res.Newest = &pr
	var wait string
	res.Rollout, wait = availability(pr, seed, now)
	c := CompareVersions(v, running)
	switch {
	case running != "" && c == 0:
		res.Reason = fmt.Sprintf("up to date: %s runs; %s", running, pinned)
	case wait != "":
		res.Reason = fmt.Sprintf("%s, which is not yet available to this node: %s", pinned, wait)
	case running == "":
		res.Take, res.Reason = &pr, "no release is running; "+pinned
	case c > 0:
		res.Take, res.Reason = &pr, fmt.Sprintf("%s is newer than the running %s; %s", v, running, pinned)
	case runningRecalled:
		res.Take, res.Downgrade = &pr, true
		res.Reason = fmt.Sprintf("the running %s is recalled; %s", running, pinned)
	case o.AllowDowngrade:
		res.Take, res.Downgrade = &pr, true
		res.Reason = fmt.Sprintf("downgrade from %s to %s allowed by the operator; %s", running, v, pinned)
	default:
		res.Reason = fmt.Sprintf("%s, which is older than the running %s; not downgrading (--allow-downgrade to force)", pinned, running)
	}
}

// availability says where the node stands in r's rollout (nil without a
// plan) and, when it may not take r now, why; "" when it may.
func availability(r Release, seed int, now time.Time) (*rollout.Eligibility, string) {
	if r.RolloutErr != nil {
		return nil, fmt.Sprintf("its signed rollout plan cannot be used by this sealift (%v)", r.RolloutErr)
	}
	if r.Meta.Rollout == nil {
		return nil, ""
	}
	e, err := r.Meta.Rollout.Eligibility(seed, now)
	if err != nil {
		return nil, err.Error()
	}
	if e.Eligible {
		return &e, ""
	}
	return &e, e.String()
}

// NodeSeed returns the node's rollout seed: override (the config's
// node.seed) when set, else the seed kept in the state, else a new one
// from crypto/rand, which is saved (so this needs a writable state
// store). from is one of the SeedFrom constants.
func (u *Updater) NodeSeed(override *int) (seed int, from string, err error) {
	st, err := u.State.Load()
	if err != nil {
		return 0, "", err
	}
	return u.nodeSeed(st, override)
}

func (u *Updater) nodeSeed(st *state.State, override *int) (int, string, error) {
	if override != nil {
		if err := rollout.CheckSeed(*override); err != nil {
			return 0, "", fmt.Errorf("%w: node.seed: %w", ErrBadInput, err)
		}
		return *override, SeedFromConfig, nil
	}
	if st.Seed != nil {
		if err := rollout.CheckSeed(*st.Seed); err != nil {
			// Drawing a new one would silently move the node to another
			// wave; an edited state file is for the operator to fix.
			return 0, "", fmt.Errorf("%w: the seed in the state file: %w (remove it to draw a new one, or set node.seed)", ErrBadInput, err)
		}
		return *st.Seed, SeedFromState, nil
	}
	seed, err := rollout.NewSeed(rand.Reader)
	if err != nil {
		return 0, "", err
	}
	st.Seed = &seed
	if err := u.State.Save(st); err != nil {
		return 0, "", fmt.Errorf("keep the new rollout seed: %w", err)
	}
	return seed, SeedFromNew, nil
}

// CompareVersions orders release versions: dot- or dash-separated fields,
// numeric fields compared as numbers, others as text, a leading "v"
// ignored; a version with a pre-release suffix ("1.2.0-rc1") sorts before
// the release ("1.2.0"). It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	a, b = strings.TrimPrefix(a, "v"), strings.TrimPrefix(b, "v")
	ac, apre, _ := strings.Cut(a, "-")
	bc, bpre, _ := strings.Cut(b, "-")
	if c := compareFields(strings.Split(ac, "."), strings.Split(bc, ".")); c != 0 {
		return c
	}
	switch {
	case apre == bpre:
		return 0
	case apre == "":
		return 1
	case bpre == "":
		return -1
	}
	return compareFields(strings.FieldsFunc(apre, isSep), strings.FieldsFunc(bpre, isSep))
}

func isSep(r rune) bool { return r == '.' || r == '-' }

func compareFields(a, b []string) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		if i >= len(a) {
			return -1
		}
		if i >= len(b) {
			return 1
		}
		an, aerr := strconv.ParseUint(a[i], 10, 64)
		bn, berr := strconv.ParseUint(b[i], 10, 64)
		switch {
		case aerr == nil && berr == nil:
			if an != bn {
				if an < bn {
					return -1
				}
				return 1
			}
		case aerr == nil: // numbers sort before text
			return -1
		case berr == nil:
			return 1
		default:
			if c := compareNatural(a[i], b[i]); c != 0 {
				return c
			}
		}
	}
	return 0
}

// compareNatural compares text with embedded numbers by value: rc2 < rc10.
func compareNatural(a, b string) int {
	for a != "" && b != "" {
		ad, bd := isDigit(a[0]), isDigit(b[0])
		ar, arest := splitRun(a, ad)
		br, brest := splitRun(b, bd)
		switch {
		case ad && bd:
			an, _ := strconv.ParseUint(ar, 10, 64)
			bn, _ := strconv.ParseUint(br, 10, 64)
			if an != bn {
				if an < bn {
					return -1
				}
				return 1
			}
		default:
			if c := strings.Compare(ar, br); c != 0 {
				return c
			}
		}
		a, b = arest, brest
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// splitRun splits off the leading run of digits (digits true) or non-digits.
func splitRun(s string, digits bool) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return s[:i], s[i:]
}
