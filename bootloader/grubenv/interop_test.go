package grubenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/internal/testutil"
)

// interopValues are written by one side and read by the other; they cover
// GRUB's two escapes and values that only look special.
var interopValues = map[string]string{
	"ORDER":     "B A",
	"A_OK":      "1",
	"A_TRY":     "0",
	"B_OK":      "0",
	"B_TRY":     "3",
	"backslash": `a\b\\c\`,
	"spaces":    "  two  spaces ",
	"newline":   "line1\nline2",
	"empty":     "",
	"equals":    "k=v=w",
	"hash":      "#not a comment",
	"quotes":    `"'`,
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expectedList is what `grub-editenv FILE list` prints: name=value lines in
// block order, values unescaped (so a newline in a value spans two lines).
func expectedList(order []string, vals map[string]string) string {
	var b strings.Builder
	for _, k := range order {
		b.WriteString(k + "=" + vals[k] + "\n")
	}
	return b.String()
}

func TestInteropGrubEditenvReadsOurs(t *testing.T) {
	tool := testutil.RequireTool(t, "grub-editenv")
	e := NewEnv()
	order := sortedKeys(interopValues)
	for _, k := range order {
		if err := e.Set(k, interopValues[k]); err != nil {
			t.Fatal(err)
		}
	}
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "grubenv")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got := testutil.Run(t, tool, file, "list")
	if want := expectedList(order, interopValues); got != want {
		t.Errorf("grub-editenv list:\n%s\nwant:\n%s", got, want)
	}

	// grub-editenv edits our block in place; we read its result.
	testutil.Run(t, tool, file, "set", "B_TRY=2", "added=x\\y")
	testutil.Run(t, tool, file, "unset", "hash")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(raw)
	if err != nil {
		t.Fatalf("parse after grub-editenv set: %v", err)
	}
	if v, _ := back.Get("B_TRY"); v != "2" {
		t.Errorf("B_TRY = %q", v)
	}
	if v, _ := back.Get("added"); v != `x\y` {
		t.Errorf("added = %q", v)
	}
	if _, ok := back.Get("hash"); ok {
		t.Error("hash still set")
	}
	if v, _ := back.Get("newline"); v != "line1\nline2" {
		t.Errorf("newline = %q", v)
	}
	f, err := FlagsFromEnv(back)
	if err != nil {
		t.Fatal(err)
	}
	want := bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 2}}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("flags = %v, want %v", f, want)
	}
}

func TestInteropWeReadGrubEditenv(t *testing.T) {
	tool := testutil.RequireTool(t, "grub-editenv")
	file := filepath.Join(t.TempDir(), "grubenv")
	testutil.Run(t, tool, file, "create")
	args := []string{file, "set"}
	for _, k := range sortedKeys(interopValues) {
		args = append(args, k+"="+interopValues[k])
	}
	testutil.Run(t, tool, args...)
	// A shorter value moves later lines back and pads with '#'.
	testutil.Run(t, tool, file, "set", "spaces=s")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Parse(raw)
	if err != nil {
		t.Fatalf("parse block made by grub-editenv: %v", err)
	}
	for k, v := range interopValues {
		if k == "spaces" {
			v = "s"
		}
		if got, ok := e.Get(k); !ok || got != v {
			t.Errorf("%s = %q (%v), want %q", k, got, ok, v)
		}
	}
	out, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, raw) {
		t.Errorf("round trip of grub-editenv's block is not byte-exact:\n got %q\nwant %q", out, raw)
	}

	// A sealift Save on top of it keeps grub-editenv's comment and
	// variables, and grub-editenv still reads the result.
	if err := SetFlags(e, bootloader.Initial(bootloader.SlotB)); err != nil {
		t.Fatal(err)
	}
	out, err = e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	list := testutil.Run(t, tool, file, "list")
	for _, want := range []string{"ORDER=B\n", "B_OK=1\n", "A_OK=0\n", "backslash=" + interopValues["backslash"] + "\n", "newline=line1\nline2\n"} {
		if !strings.Contains(list, want) {
			t.Errorf("grub-editenv list lacks %q:\n%s", want, list)
		}
	}
}

func TestInteropGrubScriptCheck(t *testing.T) {
	if _, err := exec.LookPath("grub-script-check"); err != nil {
		t.Skip("grub-script-check not installed (package grub-common)")
	}
	for _, opts := range []GrubOptions{{}, {EnvFile: "boot/grub/sealift.env"}} {
		file := filepath.Join(t.TempDir(), "grub.cfg")
		if err := os.WriteFile(file, []byte(GrubConfig(opts)), 0o644); err != nil {
			t.Fatal(err)
		}
		testutil.Run(t, "grub-script-check", file)
	}
	// The per-slot snippet sealift writes next to the kernel is sourced by
	// the script, so it must be valid too, whatever the command line holds.
	esp := bootloader.DirFS(t.TempDir())
	err := bootloader.WriteBootFiles(esp, bootloader.SlotA, bootloader.BootFiles{Kernel: []byte("k"), Version: "1", Cmdline: `root=/dev/x quiet it's "quoted" $notavar`})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "grub-script-check", filepath.Join(string(esp), "sealift", "A", "grub.cfg"))
}
