package bootloader

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

var (
	good   = SlotFlags{Priority: 2, Successful: true}
	goodLo = SlotFlags{Priority: 1, Successful: true}
	empty  = SlotFlags{}
)

func TestTransitions(t *testing.T) {
	cases := []struct {
		name    string
		from    Flags
		plan    Plan
		want    Flags
		wantErr error // nil: must succeed; errAny: any error
	}{
		{"clear keeps the other slot", Flags{SlotA: good, SlotB: {Priority: 1, Tries: 2}}, Clear(SlotB),
			Flags{SlotA: good, SlotB: empty}, nil},
		{"provision a fresh disk", Flags{SlotA: empty, SlotB: empty}, Provision(SlotA, 3),
			Flags{SlotA: {Priority: 2, Tries: 3}, SlotB: empty}, nil},
		{"provision refuses when the other is bootable", Flags{SlotA: good, SlotB: empty}, Provision(SlotB, 3), nil, errAny},
		{"trial keeps the fallback", Flags{SlotA: good, SlotB: empty}, Trial(SlotB, 3),
			Flags{SlotA: goodLo, SlotB: {Priority: 2, Tries: 3}}, nil},
		{"trial needs a bootable fallback", Flags{SlotA: empty, SlotB: empty}, Trial(SlotB, 3), nil, ErrNotBootable},
		{"trial tries out of range", Flags{SlotA: good, SlotB: empty}, Trial(SlotB, 16), nil, errAny},
		{"mark good after a trial", Flags{SlotA: goodLo, SlotB: {Priority: 2, Tries: 2}}, MarkGood(SlotB),
			Flags{SlotA: goodLo, SlotB: good}, nil},
		{"mark good refuses a cleared slot", Flags{SlotA: good, SlotB: empty}, MarkGood(SlotB), nil, ErrNotBootable},
		{"mark bad falls back", Flags{SlotA: goodLo, SlotB: {Priority: 2, Tries: 1}}, MarkBad(SlotB),
			Flags{SlotA: goodLo, SlotB: empty}, nil},
		{"mark bad needs the other bootable", Flags{SlotA: empty, SlotB: good}, MarkBad(SlotB), nil, ErrNotBootable},
		{"rollback to a good slot", Flags{SlotA: goodLo, SlotB: good}, Rollback(SlotB),
			Flags{SlotA: good, SlotB: goodLo}, nil},
		{"rollback refuses a slot that never booted well", Flags{SlotA: {Priority: 1, Tries: 3}, SlotB: good}, Rollback(SlotB), nil, ErrNotBootable},
		{"cancel a staged trial", Flags{SlotA: goodLo, SlotB: {Priority: 2, Tries: 3}}, Cancel(SlotB),
			Flags{SlotA: good, SlotB: empty}, nil},
		{"cancel with nothing staged", Flags{SlotA: good, SlotB: empty}, Cancel(SlotB), nil, ErrNoPendingTry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.plan(c.from.Clone())
			switch {
			case c.wantErr == errAny && err != nil:
				return
			case c.wantErr != nil:
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err %v, want %v", err, c.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			for _, s := range Slots {
				if got[s] != c.want[s] {
					t.Errorf("slot %s: %+v, want %+v", s, got[s], c.want[s])
				}
			}
		})
	}
}

var errAny = errors.New("any error")

func TestSimulateModel(t *testing.T) {
	cases := []struct {
		name  string
		flags Flags
		slot  Slot
		trial bool
		left  int
		text  string
	}{
		{"good slot boots without spending tries", Flags{SlotA: good, SlotB: empty}, SlotA, false, 0, "next boot: A"},
		{"trial spends a try", Flags{SlotA: goodLo, SlotB: {Priority: 2, Tries: 3}}, SlotB, true, 2, "next boot: B (trial), 2 tries left after it"},
		{"last try", Flags{SlotA: goodLo, SlotB: {Priority: 2, Tries: 1}}, SlotB, true, 0, "0 tries left"},
		{"tries exhausted falls back", Flags{SlotA: goodLo, SlotB: {Priority: 2}}, SlotA, false, 0, "next boot: A"},
		{"priority 0 never boots", Flags{SlotA: goodLo, SlotB: {Priority: 0, Successful: true}}, SlotA, false, 0, "next boot: A"},
		{"tie goes to A", Flags{SlotA: good, SlotB: good}, SlotA, false, 0, "next boot: A"},
		{"nothing bootable", Flags{SlotA: empty, SlotB: empty}, "", false, 0, "no bootable slot"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := SimulateModel(c.flags)
			if d.Slot != c.slot || d.Trial != c.trial || d.TriesLeft != c.left {
				t.Fatalf("got %+v", d)
			}
			if !strings.Contains(d.String(), c.text) {
				t.Fatalf("String() = %q, want %q", d.String(), c.text)
			}
			if c.trial && d.After[c.slot].Tries != c.left {
				t.Fatalf("after: %+v", d.After)
			}
			if c.flags[SlotA] != d.After[SlotA] && c.slot != SlotA {
				t.Fatal("simulation changed the slot it did not boot")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, f := range []Flags{
		{SlotA: {Priority: 16}}, {SlotA: {Priority: -1}}, {SlotB: {Tries: 16}}, {SlotB: {Tries: -1}},
	} {
		if err := f.Validate(); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	if err := (Flags{SlotA: {Priority: 15, Tries: 15}}).Validate(); err != nil {
		t.Error(err)
	}
}

// failSave is a backend whose Save must not be reached.
type failSave struct{ flags Flags }

func (f *failSave) Name() string               { return "test" }
func (f *failSave) Load() (Flags, error)       { return f.flags.Clone(), nil }
func (f *failSave) Save(Flags) error           { return errors.New("Save called") }
func (f *failSave) Simulate(fl Flags) Decision { return SimulateModel(fl) }

func TestApplyRefusesInvalidFlags(t *testing.T) {
	b := &failSave{flags: Flags{SlotA: good, SlotB: empty}}
	_, err := Apply(b, func(f Flags) (Flags, error) {
		f[SlotB] = SlotFlags{Priority: 99}
		return f, nil
	})
	if err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("got %v", err)
	}
}

func TestBootFilesRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		files   BootFiles
		wantErr string
	}{
		{"with initrd", BootFiles{Kernel: []byte("k"), Initrd: []byte("i"), Cmdline: "console=ttyS0 it's", Version: "v1"}, ""},
		{"without initrd", BootFiles{Kernel: []byte("k"), Cmdline: "ro", Version: "v2"}, ""},
		{"empty kernel", BootFiles{Cmdline: "ro", Version: "v1"}, "kernel is empty"},
		{"multi-line cmdline", BootFiles{Kernel: []byte("k"), Cmdline: "a\nb", Version: "v1"}, "one line"},
		{"no version", BootFiles{Kernel: []byte("k")}, "version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			esp := DirFS(t.TempDir())
			// A stale initrd from an earlier release must not survive.
			if err := WriteBootFiles(esp, SlotB, BootFiles{Kernel: []byte("old"), Initrd: []byte("old"), Version: "v0"}); err != nil {
				t.Fatal(err)
			}
			err := WriteBootFiles(esp, SlotB, c.files)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e, err := ReadBootEntry(esp, SlotB)
			if err != nil {
				t.Fatal(err)
			}
			if e.Version != c.files.Version || e.Cmdline != c.files.Cmdline || e.Kernel != "/sealift/B/vmlinuz" ||
				(e.Initrd != "") != (len(c.files.Initrd) > 0) {
				t.Fatalf("entry %+v", e)
			}
			snip, _ := esp.ReadFile("sealift/B/grub.cfg")
			if !strings.Contains(string(snip), `'\''`) && strings.Contains(c.files.Cmdline, "'") {
				t.Fatalf("quote not escaped in %q", snip)
			}
		})
	}
	if _, err := ReadBootEntry(DirFS(t.TempDir()), SlotA); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing entry: %v", err)
	}
}

func TestRecordedBackend(t *testing.T) {
	esp := DirFS(t.TempDir())
	if _, err := RecordedBackend(esp); err == nil {
		t.Fatal("no backend recorded, yet no error")
	}
	if err := RecordBackend(esp, "sdboot"); err != nil {
		t.Fatal(err)
	}
	if n, err := RecordedBackend(esp); err != nil || n != "sdboot" {
		t.Fatalf("%q %v", n, err)
	}
}
