package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
)

var h0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// TestHoldsRoundTrip: holds survive a save and load on either store, in
// their kept order, with who, when and why.
func TestHoldsRoundTrip(t *testing.T) {
	for name, d := range map[string]Store{
		"dir":    Dir(t.TempDir()),
		"on ESP": OnESP{FS: bootloader.DirFS(t.TempDir()), Path: ESPPath},
	} {
		t.Run(name, func(t *testing.T) {
			s := New()
			s.SetHold(Hold{Kind: HoldSkip, Version: "1.3.0", Reason: "cancelled while staged", By: "alice", Since: h0})
			s.SetHold(Hold{Kind: HoldSkip, Version: "1.2.0", By: "bob", Since: h0})
			s.SetHold(Hold{Kind: HoldPause, Until: h0.Add(48 * time.Hour), Reason: "CVE review", By: "alice", Since: h0})
			s.SetHold(Hold{Kind: HoldPin, Version: "1.1.0", Since: h0})
			if err := d.Save(s); err != nil {
				t.Fatal(err)
			}
			got, err := d.Load()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, h := range got.Holds {
				names = append(names, h.Name())
			}
			if n := strings.Join(names, ","); n != "pause until 2026-11-26T10:00:00Z,pin 1.1.0,skip 1.2.0,skip 1.3.0" {
				t.Fatalf("holds %s", n)
			}
			if h := FindHold(got.Holds, HoldSkip, "1.3.0"); h == nil || h.By != "alice" || h.Reason != "cancelled while staged" || !h.Since.Equal(h0) {
				t.Fatalf("skip 1.3.0: %+v", h)
			}
		})
	}
}

// TestHoldsCompatible: a schema-1 state file written before holds
// existed loads with none, and a state without holds writes no "holds"
// key (older sealift versions read the file unchanged) and no "until"
// for a pause without an end.
func TestHoldsCompatible(t *testing.T) {
	dir := t.TempDir()
	old := `{"schema": 1, "slots": {"A": {"version": "v1", "image_size": 4096, "verity": {"root_hash": "ab", "salt": "", "data_blocks": 1, "hash_offset": 4096}, "installed_at": "2026-11-24T10:00:00Z"}},
	"failed": {"v2": {"slot": "B", "version": "v2", "result": "rolled-back", "reason": "marked bad", "at": "2026-11-24T11:00:00Z"}}}`
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Dir(dir).Load()
	if err != nil || s.Holds != nil || s.Failed["v2"] == nil || s.Schema != SchemaVersion {
		t.Fatalf("%+v %v", s, err)
	}
	if err := Dir(dir).Save(s); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	if strings.Contains(string(b), "holds") {
		t.Fatalf("a state without holds wrote them:\n%s", b)
	}
	s.SetHold(Hold{Kind: HoldPause, Since: h0})
	if err := Dir(dir).Save(s); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, FileName))
	if !strings.Contains(string(b), `"kind": "pause"`) || strings.Contains(string(b), "until") {
		t.Fatalf("pause written as:\n%s", b)
	}
}

func TestSetAndClearHolds(t *testing.T) {
	s := New()
	if r := s.SetHold(Hold{Kind: HoldPause, Since: h0}); r != nil {
		t.Fatalf("first pause replaced %+v", r)
	}
	r := s.SetHold(Hold{Kind: HoldPause, Until: h0.Add(time.Hour), Since: h0.Add(time.Minute)})
	if r == nil || !r.Until.IsZero() || len(s.Holds) != 1 || s.Holds[0].Until.IsZero() {
		t.Fatalf("second pause: replaced %+v, holds %+v", r, s.Holds)
	}
	s.SetHold(Hold{Kind: HoldSkip, Version: "1.2", Since: h0})
	s.SetHold(Hold{Kind: HoldSkip, Version: "1.3", Since: h0})
	if r := s.SetHold(Hold{Kind: HoldSkip, Version: "1.2", Reason: "again", Since: h0}); r == nil || len(s.Holds) != 3 {
		t.Fatalf("skip of the same version: replaced %+v, holds %+v", r, s.Holds)
	}
	gone := s.ClearHolds(func(h Hold) bool { return h.Kind == HoldSkip && h.Version == "1.2" })
	if len(gone) != 1 || gone[0].Reason != "again" || len(s.Holds) != 2 {
		t.Fatalf("cleared %+v, left %+v", gone, s.Holds)
	}
	if gone := s.ClearHolds(func(Hold) bool { return true }); len(gone) != 2 || s.Holds != nil {
		t.Fatalf("cleared %+v, left %+v", gone, s.Holds)
	}
}

// TestHoldAgainst: which hold keeps the node from a version, and why, in
// words that name who, when and how to lift it.
func TestHoldAgainst(t *testing.T) {
	pause := Hold{Kind: HoldPause, Until: h0.Add(time.Hour), Reason: "CVE review", By: "alice", Since: h0}
	skip := Hold{Kind: HoldSkip, Version: "1.2.0", Reason: "kubelet regression", Since: h0}
	pin := Hold{Kind: HoldPin, Version: "1.1.0", By: "bob", Since: h0}
	cases := []struct {
		name    string
		holds   []Hold
		version string
		now     time.Time
		want    string // "" for no hold
	}{
		{"no holds", nil, "1.2.0", h0, ""},
		{"pause", []Hold{pause}, "1.2.0", h0, "updates are paused by alice (CVE review, since 2026-11-24T10:00:00Z, until 2026-11-24T11:00:00Z); 'sealift hold clear pause' resumes them"},
		{"pause ended", []Hold{pause}, "1.2.0", h0.Add(time.Hour), ""},
		{"skip", []Hold{skip}, "1.2.0", h0, "1.2.0 is skipped by the operator (kubelet regression, since 2026-11-24T10:00:00Z); 'sealift hold clear skip 1.2.0' allows it"},
		{"skip of another version", []Hold{skip}, "1.3.0", h0, ""},
		{"pin to another version", []Hold{pin}, "1.2.0", h0, "the node is pinned to 1.1.0 by bob (since 2026-11-24T10:00:00Z); 'sealift hold clear pin' lifts it"},
		{"pin to this version", []Hold{pin}, "1.1.0", h0, ""},
		{"pause comes first", []Hold{pause, skip}, "1.2.0", h0, "paused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, why := HoldAgainst(c.holds, c.version, c.now)
			if (h == nil) != (c.want == "") || !strings.Contains(why, c.want) {
				t.Fatalf("hold %+v, why %q; want %q", h, why, c.want)
			}
		})
	}
	if got := ActiveHolds([]Hold{pause, skip}, h0.Add(2*time.Hour)); len(got) != 1 || got[0].Kind != HoldSkip {
		t.Fatalf("active after the pause ended: %+v", got)
	}
	if _, err := ParseHoldKind("freeze"); err == nil {
		t.Fatal("unknown kind accepted")
	}
}
