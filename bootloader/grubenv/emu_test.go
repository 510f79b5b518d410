package grubenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"sealift/bootloader"
	"sealift/internal/testutil"
)

// The tests in this file run the generated grub.cfg in GRUB itself:
// grub-emu (Debian package grub-emu) is GRUB's script interpreter, load_env
// and save_env built for user space, reading and writing a FAT image built
// with dosfstools and mtools. Where the tools exist they prove that Simulate
// is what GRUB does; CI installs them, so there a missing tool fails.

// emuTools returns the paths of the tools, or skips the test.
func emuTools(t *testing.T) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, name := range []string{"grub-emu", "mkfs.vfat", "mmd", "mcopy", "mdel"} {
		paths[name] = testutil.RequireTool(t, name)
	}
	return paths
}

// emuESP builds a FAT image holding what Install and WriteBootFiles put on
// the ESP, for both slots.
func emuESP(t *testing.T, tools map[string]string, initrd bool) string {
	t.Helper()
	dir := t.TempDir()
	esp := bootloader.DirFS(filepath.Join(dir, "esp"))
	for _, s := range bootloader.Slots {
		bf := bootloader.BootFiles{Kernel: []byte("kernel"), Cmdline: "root=/dev/x quiet it's", Version: "1"}
		if initrd {
			bf.Initrd = []byte("initrd")
		}
		if err := bootloader.WriteBootFiles(esp, s, bf); err != nil {
			t.Fatal(err)
		}
	}
	if err := Install(esp, bootloader.Initial(bootloader.SlotA)); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "esp.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 4<<20); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, tools["mkfs.vfat"], img)
	testutil.Run(t, tools["mmd"], "-i", img, "::/EFI", "::/EFI/sealift", "::/sealift", "::/sealift/A", "::/sealift/B")
	// mcopy -s copies the trees; "-o" overwrites without asking.
	testutil.Run(t, tools["mcopy"], "-o", "-s", "-i", img, filepath.Join(string(esp), "EFI", "sealift"), "::/EFI/")
	testutil.Run(t, tools["mcopy"], "-o", "-s", "-i", img, filepath.Join(string(esp), "sealift", "A"), filepath.Join(string(esp), "sealift", "B"), "::/sealift/")
	return img
}

// harness is the grub.cfg grub-emu starts with. root is set like GRUB EFI
// sets it (the ESP) unless searching is under test. linux and initrd do not
// exist in grub-emu, so functions stand in for them and print their
// arguments; halt ends the emulator where booting would start.
func harness(setRoot, throughMenu bool) string {
	return emuHarness{setRoot: setRoot, throughMenu: throughMenu, haltOnLoad: true}.String()
}

// emuHarness is harness with more choices.
type emuHarness struct {
	setRoot, throughMenu bool
	// haltOnLoad ends the emulator when the last file of the entry loaded.
	// Without it the entry runs to its end; GRUB then fails to boot it
	// (nothing was really loaded) and, after a pause of a few seconds,
	// starts its fallback entry, which ends the emulator.
	haltOnLoad bool
	// bad are the files the stand-ins fail on, as GRUB's linux does on a
	// file that is not a kernel, e.g. "(hd0)/sealift/B/vmlinuz".
	bad []string
}

func (h emuHarness) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "set emu_bad=%q\nexport emu_bad\n", strings.Join(h.bad, " "))
	stand := func(name, marker, halt string) {
		fmt.Fprintf(&b, `function %s {
  for f in $emu_bad; do
    if [ "$1" = "$f" ]; then
      echo "%s-FAILS $*"
      return 1
    fi
  done
  echo "%s $*"
%s}
`, name, marker, marker, halt)
	}
	if h.haltOnLoad {
		stand("linux", "EMU-LINUX", "  if [ \"$sealift_has_initrd\" != \"1\" ]; then halt; fi\n")
		stand("initrd", "EMU-INITRD", "  halt\n")
	} else {
		stand("linux", "EMU-LINUX", "")
		stand("initrd", "EMU-INITRD", "")
	}
	if h.setRoot {
		b.WriteString("set root=(hd0)\n")
	}
	b.WriteString("source (hd0)/EFI/sealift/grub.cfg\n")
	b.WriteString(`echo "EMU-DONE chosen=$sealift_chosen"` + "\n")
	if !h.throughMenu {
		b.WriteString("halt\n")
	}
	b.WriteString(`menuentry "emu end" {
  echo "EMU-END"
  halt
}
set fallback=1
`)
	return b.String()
}

type emuRun struct {
	chosen string
	marker string
	linux  string
	initrd string
	env    *Env
	// ended: the menu entry ran to its end (GRUB went on to the next
	// entry) instead of rebooting.
	ended bool
	text  string
}

var (
	reDone   = regexp.MustCompile(`EMU-DONE chosen=(\S*)`)
	reMarker = regexp.MustCompile(`sealift-grub: chose slot [^\n]*\)`)
	reLinux  = regexp.MustCompile(`EMU-LINUX ([^\n]*)`)
	reInitrd = regexp.MustCompile(`EMU-INITRD ([^\n]*)`)
)

// runEmu boots img once in grub-emu and reads back the environment block.
func runEmu(t *testing.T, tools map[string]string, img, cfg string) emuRun {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "grub.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	dm := filepath.Join(dir, "device.map")
	if err := os.WriteFile(dm, []byte("(hd0) "+img+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tools["grub-emu"], "-d", dir, "-m", dm)
	out, err := cmd.CombinedOutput()
	text := strings.ReplaceAll(string(out), "\r", "")
	if err != nil {
		t.Fatalf("grub-emu: %v\n%s", err, text)
	}
	var r emuRun
	if m := reDone.FindStringSubmatch(text); m != nil {
		r.chosen = m[1]
	} else {
		t.Fatalf("grub-emu did not finish the script:\n%q", text)
	}
	r.marker = reMarker.FindString(text)
	r.ended = strings.Contains(text, "EMU-END")
	r.text = text
	if m := reLinux.FindStringSubmatch(text); m != nil {
		r.linux = m[1]
	}
	if m := reInitrd.FindStringSubmatch(text); m != nil {
		r.initrd = m[1]
	}
	envFile := filepath.Join(dir, "grubenv")
	testutil.Run(t, tools["mcopy"], "-o", "-i", img, "::/"+EnvPath, envFile)
	raw, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	r.env, err = Parse(raw)
	if err != nil {
		t.Fatalf("parse block written by GRUB's save_env: %v", err)
	}
	return r
}

// putEnv writes flags (plus a foreign variable) into the image's block.
func putEnv(t *testing.T, tools map[string]string, img string, f bootloader.Flags) {
	t.Helper()
	e := NewEnv()
	if err := e.Set("other_tool", `keep \ me`); err != nil {
		t.Fatal(err)
	}
	if err := SetFlags(e, f); err != nil {
		t.Fatal(err)
	}
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "grubenv")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, tools["mcopy"], "-o", "-i", img, file, "::/"+EnvPath)
}

func copyFile(t *testing.T, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "esp.img")
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestGrubEmuMatchesSimulate boots every state the block can hold, with
// both kernels present and with one or both missing, in GRUB and compares
// the slot GRUB chose and the block it saved with Simulate.
func TestGrubEmuMatchesSimulate(t *testing.T) {
	tools := emuTools(t)
	base := emuESP(t, tools, false)
	type kernels struct{ a, b bool }
	variants := []kernels{{true, true}, {true, false}, {false, true}, {false, false}}
	runs := 0
	for _, k := range variants {
		img := copyFile(t, base)
		for _, s := range bootloader.Slots {
			if (s == bootloader.SlotA && !k.a) || (s == bootloader.SlotB && !k.b) {
				testutil.Run(t, tools["mdel"], "-i", img, "::/"+kernelPath(s))
			}
		}
		has := func(s bootloader.Slot) bool {
			if s == bootloader.SlotA {
				return k.a
			}
			return k.b
		}
		for i, f := range allFlags() {
			if !representable(f) {
				continue
			}
			// Every state with both kernels; a spread of them otherwise
			// (and always with -short), to keep the run short.
			if (testing.Short() || !(k.a && k.b)) && i%5 != 0 {
				continue
			}
			runs++
			name := fmt.Sprintf("kernels A=%v B=%v %v", k.a, k.b, f)
			putEnv(t, tools, img, f)
			r := runEmu(t, tools, img, harness(true, false))
			want := Simulate(f, has)
			wantChosen := string(want.Slot)
			if want.Slot == "" {
				// Simulate: nothing boots. The script still names A and
				// GRUB would fail to load its kernel.
				wantChosen = "A"
			}
			if r.chosen != wantChosen {
				t.Errorf("%s: GRUB chose %q, Simulate %q (%s)", name, r.chosen, wantChosen, want)
				continue
			}
			got, err := FlagsFromEnv(r.env)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if !reflect.DeepEqual(got, want.After) {
				t.Errorf("%s: GRUB left %v, Simulate %v", name, got, want.After)
			}
			if v, _ := r.env.Get("other_tool"); v != `keep \ me` {
				t.Errorf("%s: save_env lost another variable: %q", name, v)
			}
			wantMarker := fmt.Sprintf("sealift-grub: chose slot %s (A_TRY=%d B_TRY=%d)", wantChosen, got["A"].Tries, got["B"].Tries)
			if r.marker != wantMarker {
				t.Errorf("%s: marker %q, want %q", name, r.marker, wantMarker)
			}
		}
	}
	t.Logf("%d boots in grub-emu", runs)
}

// TestGrubEmuBootsEntry goes through GRUB's menu: the default entry must
// source the slot's snippet and call linux (and initrd) with its files and
// command line. It also lets the script find the ESP by search, as when
// GRUB's root is another filesystem.
func TestGrubEmuBootsEntry(t *testing.T) {
	tools := emuTools(t)
	for _, tc := range []struct {
		initrd  bool
		setRoot bool
	}{{true, true}, {false, false}} {
		img := emuESP(t, tools, tc.initrd)
		putEnv(t, tools, img, bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 3}})
		r := runEmu(t, tools, img, harness(tc.setRoot, true))
		if r.chosen != "B" {
			t.Fatalf("chose %q", r.chosen)
		}
		if want := "(hd0)/sealift/B/vmlinuz root=/dev/x quiet it's sealift.slot=B"; r.linux != want {
			t.Errorf("initrd=%v: linux %q, want %q", tc.initrd, r.linux, want)
		}
		wantInitrd := ""
		if tc.initrd {
			wantInitrd = "(hd0)/sealift/B/initrd.img"
		}
		if r.initrd != wantInitrd {
			t.Errorf("initrd=%v: initrd %q, want %q", tc.initrd, r.initrd, wantInitrd)
		}
		if v, _ := r.env.Get(TryVar("B")); v != "2" {
			t.Errorf("B_TRY after boot = %q", v)
		}
	}
}

// TestGrubEmuSequence boots a failing update until GRUB falls back, reading
// the block between boots with Load as the updater would.
func TestGrubEmuSequence(t *testing.T) {
	tools := emuTools(t)
	img := emuESP(t, tools, false)
	putEnv(t, tools, img, bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 2}})
	var got []string
	for range 4 {
		r := runEmu(t, tools, img, harness(true, false))
		got = append(got, r.marker)
	}
	want := []string{
		"sealift-grub: chose slot B (A_TRY=0 B_TRY=1)",
		"sealift-grub: chose slot B (A_TRY=0 B_TRY=0)",
		"sealift-grub: chose slot A (A_TRY=0 B_TRY=0)",
		"sealift-grub: chose slot A (A_TRY=0 B_TRY=0)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("boots:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestGrubEmuLoadFailure makes GRUB's linux (or initrd) fail, as it does
// on a file that is not a kernel, and follows the boots: the script
// records the slot and file, reboots, and a trial slot's failures use up
// its tries until GRUB boots the other slot; a good slot loses its good
// flag; with nothing else to boot GRUB stays at the error; a slot that
// loads again clears the record.
func TestGrubEmuLoadFailure(t *testing.T) {
	tools := emuTools(t)
	const badB = "(hd0)/sealift/B/vmlinuz"
	type boot struct {
		chosen   string
		rebooted bool // else the entry ran to its end
	}
	tests := []struct {
		name     string
		initrd   bool
		start    bootloader.Flags
		bad      []string
		boots    []boot
		after    bootloader.Flags // flags the block holds at the end
		failed   string           // LoadFailedVar at the end
		file     string           // LoadFailedFileVar at the end
		messages []string
	}{
		{"trial slot's kernel: its tries run out, then A boots", false,
			bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 2}}, []string{badB},
			[]boot{{"B", true}, {"B", true}, {"A", false}},
			bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2}}, "B", "vmlinuz",
			[]string{"sealift-grub: slot B: cannot load its vmlinuz (see GRUB's error above)", "sealift-grub: rebooting"}},
		{"trial slot's initrd", true,
			bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 1}}, []string{"(hd0)/sealift/B/initrd.img"},
			[]boot{{"B", true}, {"A", false}},
			bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2}}, "B", "initrd.img",
			[]string{"sealift-grub: slot B: cannot load its initrd.img (see GRUB's error above)"}},
		{"good slot: loses its good flag, A boots", false,
			bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Successful: true}}, []string{badB},
			[]boot{{"B", true}, {"A", false}},
			bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2}}, "B", "vmlinuz",
			[]string{"sealift-grub: slot B is no longer good"}},
		{"nothing else to boot: GRUB stays at the error", false,
			bootloader.Flags{"A": {Priority: 1}, "B": {Priority: 2}}, []string{badB},
			[]boot{{"B", false}},
			bootloader.Flags{"A": {Priority: 1}, "B": {Priority: 2}}, "B", "vmlinuz",
			[]string{"sealift-grub: no other slot is good or has tries left: not rebooting"}},
	}
	// The boots through GRUB's menu take seconds of grub-emu's idling
	// each; the cases run side by side.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			img := emuESP(t, tools, tt.initrd)
			putEnv(t, tools, img, tt.start)
			var r emuRun
			for i, want := range tt.boots {
				r = runEmu(t, tools, img, emuHarness{setRoot: true, throughMenu: true, haltOnLoad: true, bad: tt.bad}.String())
				// A reboot ends grub-emu at once: nothing loads after it
				// and GRUB does not go on to another entry.
				rebooted := strings.HasSuffix(strings.TrimSpace(r.text), "sealift-grub: rebooting")
				if r.chosen != want.chosen || rebooted != want.rebooted {
					t.Fatalf("boot %d: chose %s, rebooted %v; want %+v\n%s", i+1, r.chosen, rebooted, want, r.text)
				}
				for _, m := range tt.messages {
					if i == 0 && !strings.Contains(r.text, m) {
						t.Errorf("boot 1 does not say %q\n%s", m, r.text)
					}
				}
			}
			got, err := FlagsFromEnv(r.env)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.after) {
				t.Errorf("flags %v, want %v", got, tt.after)
			}
			failed, _ := r.env.Get(LoadFailedVar)
			file, _ := r.env.Get(LoadFailedFileVar)
			if failed != tt.failed || file != tt.file {
				t.Errorf("%s=%q %s=%q, want %q %q", LoadFailedVar, failed, LoadFailedFileVar, file, tt.failed, tt.file)
			}
			if v, _ := r.env.Get("other_tool"); v != `keep \ me` {
				t.Errorf("save_env lost another variable: %q", v)
			}
		})
	}

	// B loads again (a new release in it): the record goes.
	t.Run("slot loads again", func(t *testing.T) {
		t.Parallel()
		img := emuESP(t, tools, false)
		putEnv(t, tools, img, bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 1}})
		r := runEmu(t, tools, img, emuHarness{setRoot: true, throughMenu: true, bad: []string{badB}}.String())
		if v, _ := r.env.Get(LoadFailedVar); r.chosen != "B" || v != "B" {
			t.Fatalf("chose %s, %s=%q\n%s", r.chosen, LoadFailedVar, v, r.text)
		}
		b := r.env
		if err := SetFlags(b, bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 1}}); err != nil {
			t.Fatal(err)
		}
		data, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "grubenv")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		testutil.Run(t, tools["mcopy"], "-o", "-i", img, file, "::/"+EnvPath)
		r = runEmu(t, tools, img, emuHarness{setRoot: true, throughMenu: true}.String())
		if r.chosen != "B" || !r.ended || !strings.Contains(r.linux, "sealift/B/vmlinuz") {
			t.Fatalf("B did not load:\n%s", r.text)
		}
		for _, v := range []string{LoadFailedVar, LoadFailedFileVar} {
			if got, ok := r.env.Get(v); ok {
				t.Errorf("%s=%q is still in the block", v, got)
			}
		}
		if v, _ := r.env.Get("other_tool"); v != `keep \ me` {
			t.Errorf("save_env lost another variable: %q", v)
		}
	})
}
