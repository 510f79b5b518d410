package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
)

func TestRoundTrip(t *testing.T) {
	for name, d := range map[string]Store{
		"dir":    Dir(filepath.Join(t.TempDir(), "nested")),
		"on ESP": OnESP{FS: bootloader.DirFS(t.TempDir()), Path: ESPPath},
	} {
		t.Run(name, func(t *testing.T) { roundTrip(t, d) })
	}
}

func roundTrip(t *testing.T, d Store) {
	s, err := d.Load()
	if err != nil || s.Pending != nil || len(s.Slots) != 0 {
		t.Fatalf("empty load: %+v %v", s, err)
	}
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	s.Slots[bootloader.SlotA] = &SlotRecord{Version: "v1", Verity: Verity{RootHash: "ab", DataBlocks: 3}, InstalledAt: at}
	s.Pending = &Pending{Slot: bootloader.SlotB, Version: "v2", Phase: PhaseWriting, StartedAt: at}
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	got, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Slots[bootloader.SlotA].Version != "v1" || got.Pending.Phase != PhaseWriting || !got.Slots[bootloader.SlotA].InstalledAt.Equal(at) {
		t.Fatalf("%+v", got)
	}
}

func TestDirLoadErrors(t *testing.T) {
	cases := []struct {
		name, content, want string
	}{
		{"corrupt", "{not json", "corrupt"},
		{"future schema", `{"schema": 99}`, "schema 99"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Dir(dir).Load(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

// TestSeedCompatible: a state file written before seeds existed loads
// without one, and seed 0 (a valid seed) survives a round trip.
func TestSeedCompatible(t *testing.T) {
	dir := t.TempDir()
	old := `{"schema": 1, "slots": {"A": {"version": "v1", "image_size": 4096, "verity": {"root_hash": "ab", "salt": "", "data_blocks": 1, "hash_offset": 4096}, "installed_at": "2026-11-24T10:00:00Z"}}}`
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Dir(dir).Load()
	if err != nil || s.Seed != nil || s.Slots[bootloader.SlotA].Version != "v1" {
		t.Fatalf("%+v %v", s, err)
	}
	zero := 0
	s.Seed = &zero
	if err := Dir(dir).Save(s); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	if !strings.Contains(string(b), `"seed": 0`) {
		t.Fatalf("seed 0 not written:\n%s", b)
	}
	if s, err := Dir(dir).Load(); err != nil || s.Seed == nil || *s.Seed != 0 {
		t.Fatalf("%+v %v", s, err)
	}
}
