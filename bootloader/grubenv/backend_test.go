package grubenv

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sealift/bootloader"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/grubenv")

const goldenDir = "../../testdata/grubenv"

func TestGrubConfigGolden(t *testing.T) {
	got := GrubConfig(GrubOptions{})
	path := filepath.Join(goldenDir, "grub.cfg")
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("grub.cfg differs from %s (run go test -update after reviewing the change)", path)
	}
}

func TestGrubConfigContent(t *testing.T) {
	cfg := GrubConfig(GrubOptions{})
	for _, want := range []string{
		"set timeout=0\n",
		"set default=0\n",
		"load_env --file \"$sealift_env\" ORDER A_OK A_TRY B_OK B_TRY sealift_load_failed\n",
		"insmod reboot\n",
		`  if ! linux "($sealift_esp)/sealift/$sealift_chosen/vmlinuz" $sealift_cmdline sealift.slot=$sealift_chosen; then` + "\n    sealift_cannot_load vmlinuz\n",
		`  elif ! initrd "($sealift_esp)/sealift/$sealift_chosen/initrd.img"; then` + "\n    sealift_cannot_load initrd.img\n",
		"  save_env --file \"$sealift_env\" sealift_load_failed sealift_load_failed_file\n  if [ \"$sealift_mode\" = \"anyway\" ]; then\n",
		"      set B_OK=0\n      save_env --file \"$sealift_env\" B_OK\n",
		"  reboot\n",
		"save_env --file \"$sealift_env\" A_TRY B_TRY\n",
		`elif [ "$B_TRY" = "15" ]; then` + "\n      set B_TRY=14\n",
		`elif [ "$A_TRY" = "1" ]; then` + "\n      set A_TRY=0\n",
		`if [ ! -f "($sealift_esp)/sealift/B/vmlinuz" ]; then`,
		`echo "sealift-grub: chose slot $sealift_chosen (A_TRY=$A_TRY B_TRY=$B_TRY)"`,
		`source "($sealift_esp)/sealift/$sealift_chosen/grub.cfg"`,
		`linux "($sealift_esp)/sealift/$sealift_chosen/vmlinuz" $sealift_cmdline sealift.slot=$sealift_chosen`,
		`initrd "($sealift_esp)/sealift/$sealift_chosen/initrd.img"`,
		"search --no-floppy --file --set=sealift_esp /EFI/sealift/grubenv\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("grub.cfg lacks %q", want)
		}
	}
	// GRUB 2.06 pitfall: ids in default/fallback were not resolved.
	if strings.Contains(cfg, "fallback") || strings.Contains(cfg, "--id") {
		t.Error("grub.cfg uses a fallback or an entry id")
	}
	other := GrubConfig(GrubOptions{EnvFile: "/boot/x/env"})
	if !strings.Contains(other, `--set=sealift_esp /boot/x/env`) || !strings.Contains(other, `set sealift_env="($sealift_esp)/boot/x/env"`) {
		t.Error("EnvFile not used")
	}
	defer func() {
		if recover() == nil {
			t.Error("unsafe EnvFile accepted")
		}
	}()
	GrubConfig(GrubOptions{EnvFile: `a"; reboot; "`})
}

// espWithKernels is a temp ESP with boot files for the given slots.
func espWithKernels(t *testing.T, slots ...bootloader.Slot) bootloader.DirFS {
	t.Helper()
	esp := bootloader.DirFS(t.TempDir())
	for _, s := range slots {
		err := bootloader.WriteBootFiles(esp, s, bootloader.BootFiles{Kernel: []byte("kernel " + string(s)), Cmdline: "root=x ro", Version: "1.0"})
		if err != nil {
			t.Fatal(err)
		}
	}
	return esp
}

func TestInstallLoadSave(t *testing.T) {
	esp := espWithKernels(t, bootloader.SlotA)
	if err := Install(esp, bootloader.Initial(bootloader.SlotA)); err != nil {
		t.Fatal(err)
	}
	cfg, err := esp.ReadFile(ConfigPath)
	if err != nil || string(cfg) != GrubConfig(GrubOptions{}) {
		t.Fatalf("grub.cfg not installed: %v", err)
	}
	raw, err := esp.ReadFile(EnvPath)
	if err != nil || len(raw) != BlockSize {
		t.Fatalf("grubenv: %d bytes, %v", len(raw), err)
	}
	if want := block("ORDER=A\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n"); !bytes.Equal(raw, want) {
		t.Errorf("initial grubenv = %q", raw)
	}
	b := New(esp)
	if b.Name() != "grubenv" {
		t.Errorf("Name = %q", b.Name())
	}
	f, err := b.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f, bootloader.Initial(bootloader.SlotA)) {
		t.Errorf("Load = %v", f)
	}

	// Another tool's variables survive a Save, in place.
	e, _ := Parse(raw)
	_ = e.Set("saved_entry", `weird \ value`)
	data, _ := e.Encode()
	if err := esp.WriteFile(EnvPath, data); err != nil {
		t.Fatal(err)
	}
	next, err := bootloader.Apply(b, bootloader.Trial(bootloader.SlotB, 3))
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, next) {
		t.Errorf("Load after Trial = %v, want %v", got, next)
	}
	e2, err := b.LoadEnv()
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := e2.Get("saved_entry"); v != `weird \ value` {
		t.Errorf("other variable lost: %q", v)
	}
	if names := strings.Join(e2.Names(), " "); names != "ORDER A_OK A_TRY B_OK B_TRY saved_entry" {
		t.Errorf("variable order = %s", names)
	}
}

func TestLoadErrors(t *testing.T) {
	esp := bootloader.DirFS(t.TempDir())
	b := New(esp)
	if _, err := b.Load(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of missing block: %v", err)
	}
	// Save creates a missing block.
	if err := b.Save(bootloader.Initial(bootloader.SlotB)); err != nil {
		t.Fatal(err)
	}
	// A damaged block is reported by Load and Save, and replaced by Install.
	if err := esp.WriteFile(EnvPath, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(); !errors.Is(err, ErrSize) {
		t.Errorf("Load of damaged block: %v", err)
	}
	if err := b.Save(bootloader.Initial(bootloader.SlotA)); !errors.Is(err, ErrSize) {
		t.Errorf("Save over damaged block: %v", err)
	}
	if err := Install(esp, bootloader.Initial(bootloader.SlotA)); err != nil {
		t.Fatalf("Install over damaged block: %v", err)
	}
	if f, err := b.Load(); err != nil || !reflect.DeepEqual(f, bootloader.Initial(bootloader.SlotA)) {
		t.Errorf("after Install: %v, %v", f, err)
	}
	if err := b.Save(bootloader.Flags{"A": {Priority: 16}}); err == nil {
		t.Error("Save accepted priority 16")
	}
}

func TestSaveOverflow(t *testing.T) {
	esp := bootloader.DirFS(t.TempDir())
	e := NewEnv()
	_ = e.Set("big", strings.Repeat("x", BlockSize-len(Signature)-len("big=\n")))
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	_ = esp.MkdirAll("EFI/sealift")
	_ = esp.WriteFile(EnvPath, data)
	if err := New(esp).Save(bootloader.Initial(bootloader.SlotA)); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Save into a full block: %v", err)
	}
	// The block on disk is untouched.
	if got, _ := esp.ReadFile(EnvPath); !bytes.Equal(got, data) {
		t.Error("full block was changed")
	}
}

// TestLoadFailure: what the script records when GRUB cannot load a slot's
// kernel is read back by LoadFailure, kept while the slot keeps its place,
// and dropped when the slot is cleared.
func TestLoadFailure(t *testing.T) {
	esp := espWithKernels(t, bootloader.SlotA, bootloader.SlotB)
	trial := bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 1}}
	if err := Install(esp, trial); err != nil {
		t.Fatal(err)
	}
	b := New(esp)
	if s, f, err := b.LoadFailure(); s != "" || f != "" || err != nil {
		t.Fatalf("fresh block: %q %q %v", s, f, err)
	}
	// As the script's save_env leaves it.
	e, err := b.LoadEnv()
	if err != nil {
		t.Fatal(err)
	}
	e.Set(LoadFailedVar, "B")
	e.Set(LoadFailedFileVar, "vmlinuz")
	e.Set(TryVar("B"), "0")
	data, _ := e.Encode()
	if err := esp.WriteFile(EnvPath, data); err != nil {
		t.Fatal(err)
	}
	if s, f, err := b.LoadFailure(); s != "B" || f != "vmlinuz" || err != nil {
		t.Fatalf("LoadFailure = %q %q %v", s, f, err)
	}
	// A transition that keeps B in ORDER keeps the record.
	if _, err := bootloader.Apply(b, bootloader.MarkGood(bootloader.SlotA)); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := b.LoadFailure(); s != "B" {
		t.Fatalf("record lost while B keeps its place: %q", s)
	}
	// Clearing B (boot-check after the fallback, or a new install) drops it.
	if _, err := bootloader.Apply(b, bootloader.Clear(bootloader.SlotB)); err != nil {
		t.Fatal(err)
	}
	e, _ = b.LoadEnv()
	for _, v := range []string{LoadFailedVar, LoadFailedFileVar} {
		if got, ok := e.Get(v); ok {
			t.Errorf("%s=%q after B was cleared", v, got)
		}
	}
	if s, _, _ := b.LoadFailure(); s != "" {
		t.Errorf("LoadFailure = %q after B was cleared", s)
	}
}
