package updater

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"sealift/signing"
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
}

// CheckResult says which release a node should take, or why none.
type CheckResult struct {
	Running   string   `json:"running_version,omitempty"`
	Newest    *Release `json:"newest,omitempty"` // newest eligible release, even if not taken
	Take      *Release `json:"take,omitempty"`   // the release to install; nil when none
	Reason    string   `json:"reason"`
	Downgrade bool     `json:"downgrade,omitempty"`
}

// ErrNoRelease is returned by Update when there is nothing to install.
var ErrNoRelease = errors.New("no release to install")

// releases lists the signed releases for this node's variant and arch.
func releases(targets map[string]signing.TargetInfo, o CheckOptions) (all, eligible []Release, err error) {
	for name, info := range targets {
		if len(info.Custom) == 0 {
			continue // not a sealift release
		}
		var m ReleaseMeta
		if err := json.Unmarshal(info.Custom, &m); err != nil || m.Version == "" {
			continue
		}
		if m.Variant != o.Variant || m.Arch != o.Arch {
			continue
		}
		if name != TargetName(m.Variant, m.Arch, m.Version) {
			// A signed target whose name and metadata disagree is a
			// publishing error; refusing it keeps one name per version.
			return nil, nil, fmt.Errorf("signed target %q carries metadata for %s/%s %s", name, m.Variant, m.Arch, m.Version)
		}
		r := Release{Target: name, Meta: m, Info: info}
		all = append(all, r)
		if !m.Recalled {
			eligible = append(eligible, r)
		}
	}
	sort.Slice(eligible, func(i, j int) bool { return CompareVersions(eligible[i].Meta.Version, eligible[j].Meta.Version) > 0 })
	return all, eligible, nil
}

// decide picks the release to take given the running version. Releases
// in failed fell back on this node and are not taken again.
func decide(targets map[string]signing.TargetInfo, running string, failed map[string]*state.Outcome, o CheckOptions) (*CheckResult, error) {
	all, eligible, err := releases(targets, o)
	if err != nil {
		return nil, err
	}
	res := &CheckResult{Running: running}
	var skipped []string
	kept := eligible[:0]
	for _, r := range eligible {
		if f := failed[r.Meta.Version]; f != nil {
			skipped = append(skipped, fmt.Sprintf("%s (failed here: %s)", r.Meta.Version, f.Reason))
			continue
		}
		kept = append(kept, r)
	}
	eligible = kept
	defer func() {
		if len(skipped) > 0 {
			res.Reason += "; skipped " + strings.Join(skipped, ", ") + " ('sealift retry VERSION' allows it again)"
		}
	}()
	if len(eligible) == 0 {
		res.Reason = fmt.Sprintf("no signed release for variant %q, arch %q", o.Variant, o.Arch)
		if len(all) > 0 {
			res.Reason = fmt.Sprintf("every signed release for variant %q, arch %q is recalled", o.Variant, o.Arch)
		}
		return res, nil
	}
	newest := eligible[0]
	res.Newest = &newest
	if running == "" {
		res.Take, res.Reason = &newest, "no release is running"
		return res, nil
	}
	runningRecalled := false
	for _, r := range all {
		if r.Meta.Version == running && r.Meta.Recalled {
			runningRecalled = true
		}
	}
	switch c := CompareVersions(newest.Meta.Version, running); {
	case c > 0:
		res.Take, res.Reason = &newest, fmt.Sprintf("%s is newer than the running %s", newest.Meta.Version, running)
	case c == 0:
		res.Reason = fmt.Sprintf("up to date: %s is the newest release", running)
	case runningRecalled:
		res.Take, res.Downgrade = &newest, true
		res.Reason = fmt.Sprintf("the running %s is recalled; %s is the newest release not recalled", running, newest.Meta.Version)
	case o.AllowDowngrade:
		res.Take, res.Downgrade = &newest, true
		res.Reason = fmt.Sprintf("downgrade from %s to %s allowed by the operator", running, newest.Meta.Version)
	default:
		res.Reason = fmt.Sprintf("the running %s is newer than the newest signed release %s; not downgrading (--allow-downgrade to force)", running, newest.Meta.Version)
	}
	return res, nil
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
