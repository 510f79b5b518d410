package sdboot

import (
	"errors"
	"flag"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sealift/bootloader"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/sdboot")

const goldenDir = "../../testdata/sdboot"

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join(goldenDir, name)
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n%s\nwant:\n%s", name, got, want)
	}
}

var (
	a, b    = bootloader.SlotA, bootloader.SlotB
	initial = bootloader.Initial(bootloader.SlotA)
)

func TestInstall(t *testing.T) {
	esp := newESP(t, a, b)
	if err := Install(esp, initial); err != nil {
		t.Fatal(err)
	}
	if got := entryFiles(t, esp); !reflect.DeepEqual(got, []string{"sealift-0001-a.conf"}) {
		t.Fatalf("entries %v", got)
	}
	conf, err := esp.ReadFile(LoaderConf)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "loader.conf", string(conf))
	if strings.Contains(string(conf), "default") && !strings.Contains(string(conf), `No "default"`) {
		t.Error("loader.conf sets a default")
	}
	entry, err := esp.ReadFile(path.Join(EntriesDir, "sealift-0001-a.conf"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "sealift-0001-a.conf", string(entry))

	// B's entry (no initrd) as a Trial creates it.
	if _, err := bootloader.Apply(New(esp), bootloader.Trial(b, 3)); err != nil {
		t.Fatal(err)
	}
	entry, err = esp.ReadFile(path.Join(EntriesDir, "sealift-0002-b+3.conf"))
	if err != nil {
		t.Fatalf("%v; entries %v", err, entryFiles(t, esp))
	}
	golden(t, "sealift-0002-b+3.conf", string(entry))
	if strings.Contains(string(entry), "sort-key") || strings.Contains(string(entry), "initrd") {
		t.Errorf("entry B:\n%s", entry)
	}
}

func TestInstallSkipsSlotWithoutBootFiles(t *testing.T) {
	esp := newESP(t, a)
	f := bootloader.Flags{a: {Priority: 1, Successful: true}, b: {Priority: 2, Tries: 3}}
	if err := Install(esp, f); err != nil {
		t.Fatal(err)
	}
	if got := entryFiles(t, esp); !reflect.DeepEqual(got, []string{"sealift-0001-a.conf"}) {
		t.Errorf("entries %v", got)
	}
}

func TestRenderEntry(t *testing.T) {
	got, err := RenderEntry(bootloader.BootEntry{Slot: b, Version: "2", Kernel: "/sealift/B/vmlinuz"})
	if err != nil {
		t.Fatal(err)
	}
	want := "title sealift 2 (slot B)\nversion 2\nlinux /sealift/B/vmlinuz\noptions sealift.slot=B\n"
	if got != want {
		t.Errorf("got %q", got)
	}
	for _, be := range []bootloader.BootEntry{
		{Slot: "C", Kernel: "/k"},
		{Slot: a},
		{Slot: a, Kernel: "/k", Cmdline: "x\ny"},
		{Slot: a, Kernel: "/k", Version: "1\n"},
	} {
		if _, err := RenderEntry(be); err == nil {
			t.Errorf("RenderEntry(%+v) succeeded", be)
		}
	}
}

// writeEntries puts entry files with a valid body into loader/entries.
func writeEntries(t *testing.T, esp bootloader.DirFS, files ...string) {
	t.Helper()
	if err := esp.MkdirAll(EntriesDir); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		slot := "A"
		if strings.Contains(f, "-b") {
			slot = "B"
		}
		body := "title x\nlinux /sealift/" + slot + "/vmlinuz\noptions sealift.slot=" + slot + "\n"
		if err := esp.WriteFile(path.Join(EntriesDir, f), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  bootloader.Flags
		err   bool
	}{
		{name: "nothing", want: bootloader.Flags{a: {}, b: {}}},
		{name: "initial", files: []string{"sealift-0001-a.conf"},
			want: bootloader.Flags{a: {Priority: 2, Successful: true}, b: {}}},
		{name: "trial B", files: []string{"sealift-0001-a.conf", "sealift-0002-b+3.conf"},
			want: bootloader.Flags{a: {Priority: 1, Successful: true}, b: {Priority: 2, Tries: 3}}},
		{name: "trial B spent", files: []string{"sealift-0001-a.conf", "sealift-0002-b+0-3.conf"},
			want: bootloader.Flags{a: {Priority: 1, Successful: true}, b: {Priority: 2}}},
		{name: "rolled back", files: []string{"sealift-0003-a.conf", "sealift-0002-b.conf"},
			want: bootloader.Flags{a: {Priority: 2, Successful: true}, b: {Priority: 1, Successful: true}}},
		{name: "generation compares as a number", files: []string{"sealift-0009-a.conf", "sealift-10000-b+1-2.conf"},
			want: bootloader.Flags{a: {Priority: 1, Successful: true}, b: {Priority: 2, Tries: 1}}},
		{name: "same generation: b sorts higher, like systemd-boot", files: []string{"sealift-0002-a.conf", "sealift-0002-b.conf"},
			want: bootloader.Flags{a: {Priority: 1, Successful: true}, b: {Priority: 2, Successful: true}}},
		{name: "foreign and hidden files ignored", files: []string{"debian-6.1.conf", ".sealift-0003-b.conf.tmp1", "sealift-0001-a.conf", "sealift-0001-a.conf.bak"},
			want: bootloader.Flags{a: {Priority: 2, Successful: true}, b: {}}},
		{name: "two entries for B: the one systemd-boot prefers counts", files: []string{"sealift-0001-b.conf", "sealift-0003-b+2-1.conf"},
			want: bootloader.Flags{a: {}, b: {Priority: 2, Tries: 2}}},
		{name: "two entries for B: a bad one loses", files: []string{"sealift-0001-b.conf", "sealift-0003-b+0-3.conf"},
			want: bootloader.Flags{a: {}, b: {Priority: 2, Successful: true}}},
		{name: "malformed sealift entry", files: []string{"sealift-1-a.conf"}, err: true},
		{name: "upper-case sealift entry", files: []string{"SEALIFT-0001-A.CONF"}, err: true},
		{name: "more tries than flags hold", files: []string{"sealift-0001-a+16.conf"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			esp := bootloader.DirFS(t.TempDir())
			writeEntries(t, esp, tt.files...)
			got, err := New(esp).Load()
			if tt.err {
				if err == nil {
					t.Fatalf("Load = %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSave(t *testing.T) {
	good := bootloader.SlotFlags{Successful: true}
	p := func(prio int, v bootloader.SlotFlags) bootloader.SlotFlags { v.Priority = prio; return v }
	tests := []struct {
		name  string
		start []string
		flags bootloader.Flags
		want  []string
		ops   []string
	}{
		{name: "trial creates B above A",
			start: []string{"sealift-0001-a.conf"}, flags: bootloader.Flags{a: p(1, good), b: {Priority: 2, Tries: 3}},
			want: []string{"sealift-0001-a.conf", "sealift-0002-b+3.conf"}, ops: []string{"write sealift-0002-b+3.conf"}},
		{name: "mark good drops the counter",
			start: []string{"sealift-0001-a.conf", "sealift-0002-b+2-1.conf"}, flags: bootloader.Flags{a: p(1, good), b: p(2, good)},
			want: []string{"sealift-0001-a.conf", "sealift-0002-b.conf"}, ops: []string{"rename sealift-0002-b+2-1.conf -> sealift-0002-b.conf"}},
		{name: "rollback raises A's generation",
			start: []string{"sealift-0001-a.conf", "sealift-0002-b.conf"}, flags: bootloader.Flags{a: p(2, good), b: p(1, good)},
			want: []string{"sealift-0002-b.conf", "sealift-0003-a.conf"}, ops: []string{"rename sealift-0001-a.conf -> sealift-0003-a.conf"}},
		{name: "cancel removes B",
			start: []string{"sealift-0001-a.conf", "sealift-0002-b+3.conf"}, flags: bootloader.Flags{a: p(2, good), b: {}},
			want: []string{"sealift-0001-a.conf"}, ops: []string{"remove sealift-0002-b+3.conf"}},
		{name: "unchanged tries keep systemd-boot's DONE count",
			start: []string{"sealift-0001-a.conf", "sealift-0002-b+2-1.conf"}, flags: bootloader.Flags{a: p(1, good), b: {Priority: 2, Tries: 2}},
			want: []string{"sealift-0001-a.conf", "sealift-0002-b+2-1.conf"}},
		{name: "new tries restart the counter",
			start: []string{"sealift-0001-a.conf", "sealift-0002-b+2-1.conf"}, flags: bootloader.Flags{a: p(1, good), b: {Priority: 2, Tries: 5}},
			want: []string{"sealift-0001-a.conf", "sealift-0002-b+5.conf"}},
		{name: "no tries, not good: +0-DONE",
			start: []string{"sealift-0001-a.conf", "sealift-0002-b+2-1.conf"}, flags: bootloader.Flags{a: p(1, good), b: {Priority: 2}},
			want: []string{"sealift-0001-a.conf", "sealift-0002-b+0-1.conf"}},
		{name: "no tries, not good, from good: +0-0",
			start: []string{"sealift-0001-a.conf"}, flags: bootloader.Flags{a: {Priority: 2}, b: {}},
			want: []string{"sealift-0001-a+0-0.conf"}},
		{name: "target first: A overtakes before B is made bad",
			start: []string{"sealift-0001-a.conf", "sealift-0002-b+2-1.conf"}, flags: bootloader.Flags{a: p(2, good), b: {Priority: 1}},
			want: []string{"sealift-0002-b+0-1.conf", "sealift-0003-a.conf"},
			ops:  []string{"rename sealift-0001-a.conf -> sealift-0003-a.conf", "rename sealift-0002-b+2-1.conf -> sealift-0002-b+0-1.conf"}},
		{name: "target first: B raised and blessed before A is removed",
			start: []string{"sealift-0002-a.conf", "sealift-0001-b+1-1.conf"}, flags: bootloader.Flags{a: {}, b: p(2, good)},
			want: []string{"sealift-0001-b.conf"},
			ops:  []string{"rename sealift-0001-b+1-1.conf -> sealift-0001-b.conf", "remove sealift-0002-a.conf"}},
		{name: "extra entries removed last",
			start: []string{"sealift-0001-b.conf", "sealift-0003-b+2-1.conf", "sealift-0002-a.conf"}, flags: bootloader.Flags{a: p(1, good), b: p(2, good)},
			want: []string{"sealift-0002-a.conf", "sealift-0003-b.conf"},
			ops:  []string{"rename sealift-0003-b+2-1.conf -> sealift-0003-b.conf", "remove sealift-0001-b.conf"}},
		{name: "an extra with the final name is replaced, not removed",
			start: []string{"sealift-0003-b.conf", "sealift-0003-b+2-1.conf"}, flags: bootloader.Flags{a: {}, b: p(2, good)},
			want: []string{"sealift-0003-b.conf"}},
		{name: "foreign entries are left alone",
			start: []string{"debian.conf", "sealift-0001-a.conf"}, flags: bootloader.Flags{a: p(1, good), b: {Priority: 2, Tries: 1}},
			want: []string{"debian.conf", "sealift-0001-a.conf", "sealift-0002-b+1.conf"}},
		{name: "saving what Load returned changes nothing",
			start: []string{"sealift-0004-a+1-2.conf", "sealift-0003-b.conf"}, flags: bootloader.Flags{a: {Priority: 2, Tries: 1}, b: p(1, good)},
			want: []string{"sealift-0003-b.conf", "sealift-0004-a+1-2.conf"}, ops: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			esp := newESP(t, a, b)
			writeEntries(t, esp, tt.start...)
			cut := &cutFS{FS: esp, n: -1}
			if err := New(cut).Save(tt.flags); err != nil {
				t.Fatal(err)
			}
			if got := entryFiles(t, esp); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("entries %v, want %v", got, tt.want)
			}
			if tt.ops != nil && strings.Join(cut.ops, "; ") != strings.Join(tt.ops, "; ") {
				t.Errorf("ops %q, want %q", cut.ops, tt.ops)
			}
			got, err := New(esp).Load()
			if err != nil {
				t.Fatal(err)
			}
			if want := normalize(tt.flags); !reflect.DeepEqual(got, want) {
				t.Errorf("Load after Save = %v, want %v", got, want)
			}
		})
	}
}

func TestSaveErrors(t *testing.T) {
	esp := newESP(t, a) // B has no boot files
	if err := Install(esp, initial); err != nil {
		t.Fatal(err)
	}
	before := entryFiles(t, esp)
	_, err := bootloader.Apply(New(esp), bootloader.Trial(b, 3))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Trial without boot files: %v", err)
	}
	if got := entryFiles(t, esp); !reflect.DeepEqual(got, before) {
		t.Errorf("failed Save changed entries: %v", got)
	}
	if err := New(esp).Save(bootloader.Flags{a: {Priority: 16}}); err == nil {
		t.Error("Save accepted priority 16")
	}
	writeEntries(t, esp, "sealift-0002-c.conf")
	if err := New(esp).Save(initial); err == nil {
		t.Error("Save over a malformed sealift entry succeeded")
	}
}

func TestBless(t *testing.T) {
	esp := newESP(t, a, b)
	writeEntries(t, esp, "sealift-0001-a.conf", "sealift-0002-b+2-1.conf")
	be := New(esp)
	if err := be.Bless(b); err != nil {
		t.Fatal(err)
	}
	if got := entryFiles(t, esp); !reflect.DeepEqual(got, []string{"sealift-0001-a.conf", "sealift-0002-b.conf"}) {
		t.Errorf("entries %v", got)
	}
	// Blessing the fallback after a failed trial raises it above the bad entry.
	writeEntries(t, esp, "sealift-0003-b+0-3.conf")
	_ = esp.Remove(path.Join(EntriesDir, "sealift-0002-b.conf"))
	if err := be.Bless(a); err != nil {
		t.Fatal(err)
	}
	if got := entryFiles(t, esp); !reflect.DeepEqual(got, []string{"sealift-0003-b+0-3.conf", "sealift-0004-a.conf"}) {
		t.Errorf("entries %v", got)
	}
	if be.Name() != "sdboot" {
		t.Errorf("Name = %q", be.Name())
	}
}

// normalize is what entries can hold of f: priorities become ranks (2, 1),
// a successful slot has no tries, a slot with priority 0 has nothing.
func normalize(f bootloader.Flags) bootloader.Flags {
	out := bootloader.Flags{a: {}, b: {}}
	for i, s := range f.Order() {
		v := f[s]
		v.Priority = 2 - i
		if v.Successful {
			v.Tries = 0
		}
		out[s] = v
	}
	return out
}
