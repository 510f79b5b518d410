package gptprio

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sealift/bootloader"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var (
	sA = bootloader.SlotA
	sB = bootloader.SlotB
)

func TestEncodeDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  uint64
		f    bootloader.SlotFlags
		want uint64
	}{
		{"nothing", 0, bootloader.SlotFlags{}, 0},
		{"cgpt -P 15 -T 3 -S 1", 0, bootloader.SlotFlags{Priority: 15, Tries: 3, Successful: true}, 0x013F000000000000},
		{"trial P2 T3", 0, bootloader.SlotFlags{Priority: 2, Tries: 3}, 0x0032000000000000},
		{"good P2 S1", 0, bootloader.SlotFlags{Priority: 2, Successful: true}, 0x0102000000000000},
		{"fallback P1 S1", 0, bootloader.SlotFlags{Priority: 1, Successful: true}, 0x0101000000000000},
		{"max tries", 0, bootloader.SlotFlags{Tries: 15}, 0x00F0000000000000},
		{"required bit kept", 1, bootloader.SlotFlags{Priority: 1}, 0x0001000000000001},
		{"legacy BIOS bootable kept", 1 << 2, bootloader.SlotFlags{Priority: 1}, 0x0001000000000004},
		{"Bottlerocket booted-once kept", 1 << 57, bootloader.SlotFlags{Priority: 2, Tries: 1}, 0x0212000000000000},
		{"high bits kept", 0xFC00000000000000, bootloader.SlotFlags{Successful: true}, 0xFD00000000000000},
		{"all foreign bits kept, ours replaced", ^uint64(0), bootloader.SlotFlags{Priority: 3, Tries: 4}, ^Mask | 0x0043000000000000},
		{"clearing keeps foreign bits", 0x027F000000000005, bootloader.SlotFlags{}, 0x0200000000000005},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Encode(tc.old, tc.f)
			if got != tc.want {
				t.Fatalf("Encode(%#016x, %+v) = %#016x, want %#016x", tc.old, tc.f, got, tc.want)
			}
			if d := Decode(got); d != tc.f {
				t.Errorf("Decode(%#016x) = %+v, want %+v", got, d, tc.f)
			}
		})
	}
	if Mask != 0x01FF000000000000 {
		t.Errorf("Mask %#016x", Mask)
	}
	// Any word, any valid flags: the flags round-trip and no foreign bit moves.
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 10000; i++ {
		old := rng.Uint64()
		f := bootloader.SlotFlags{Priority: rng.Intn(16), Tries: rng.Intn(16), Successful: rng.Intn(2) == 1}
		v := Encode(old, f)
		if Decode(v) != f || v&^Mask != old&^Mask {
			t.Fatalf("Encode(%#016x, %+v) = %#016x", old, f, v)
		}
	}
}

// memStore is an AttrStore in memory that counts table writes.
type memStore struct {
	attrs  map[bootloader.Slot]uint64
	writes int
	err    error
}

func (m *memStore) Attributes(s bootloader.Slot) (uint64, error) {
	if m.err != nil {
		return 0, m.err
	}
	return m.attrs[s], nil
}

func (m *memStore) SetAttributes(a map[bootloader.Slot]uint64) error {
	if m.err != nil {
		return m.err
	}
	m.writes++
	for s, v := range a {
		m.attrs[s] = v
	}
	return nil
}

func TestBackend(t *testing.T) {
	st := &memStore{attrs: map[bootloader.Slot]uint64{sA: 1<<57 | 1, sB: 1 << 2}}
	b := New(st)
	if b.Name() != "gptprio" {
		t.Errorf("Name %q", b.Name())
	}
	f, err := b.Load()
	if err != nil || f[sA] != (bootloader.SlotFlags{}) || f[sB] != (bootloader.SlotFlags{}) {
		t.Fatalf("Load: %v, %v", f, err)
	}
	want := bootloader.Flags{sA: {Priority: 1, Successful: true}, sB: {Priority: 2, Tries: 3}}
	if err := b.Save(want); err != nil {
		t.Fatal(err)
	}
	if st.writes != 1 {
		t.Errorf("Save made %d table writes, want 1", st.writes)
	}
	if st.attrs[sA] != 0x0301000000000001 || st.attrs[sB] != 0x0032000000000004 {
		t.Errorf("words %#016x %#016x", st.attrs[sA], st.attrs[sB])
	}
	if got, _ := b.Load(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Load after Save: %v", got)
	}
	// Unchanged flags: no write.
	if err := b.Save(want); err != nil || st.writes != 1 {
		t.Errorf("Save of the same flags: %v, %d writes", err, st.writes)
	}
	// A bit set by someone else between Load and Save survives.
	st.attrs[sB] |= 1 << 60
	if err := b.Save(bootloader.Flags{sA: {Priority: 2, Successful: true}, sB: {Priority: 1, Successful: true}}); err != nil {
		t.Fatal(err)
	}
	if st.attrs[sB] != 0x1101000000000004 {
		t.Errorf("slot B %#016x: foreign bit lost", st.attrs[sB])
	}
	// Invalid flags are refused before anything is written.
	n := st.writes
	for _, bad := range []bootloader.Flags{
		{sA: {Priority: 16}, sB: {}},
		{sA: {Tries: -1}, sB: {}},
		{sA: {}},
	} {
		if err := b.Save(bad); err == nil {
			t.Errorf("Save(%v) succeeded", bad)
		}
	}
	if st.writes != n {
		t.Error("a refused Save wrote")
	}
	// Store errors come back wrapped.
	boom := errors.New("boom")
	st.err = boom
	if _, err := b.Load(); !errors.Is(err, boom) {
		t.Errorf("Load: %v", err)
	}
	if err := b.Save(want); !errors.Is(err, boom) {
		t.Errorf("Save: %v", err)
	}
}

func TestSimulateIsTheModel(t *testing.T) {
	b := New(&memStore{})
	for _, f := range []bootloader.Flags{
		{sA: {Priority: 2, Successful: true}, sB: {}},
		{sA: {Priority: 1, Successful: true}, sB: {Priority: 2, Tries: 3}},
		{sA: {Priority: 1, Successful: true}, sB: {Priority: 2, Tries: 0}},
		{sA: {Priority: 2, Tries: 1}, sB: {Priority: 2, Tries: 1}},
		{sA: {}, sB: {}},
	} {
		if got, want := b.Simulate(f), bootloader.SimulateModel(f); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Simulate(%v) = %v, want %v", f, got, want)
		}
	}
}

// step is one line of the golden transition walk.
type step struct {
	name string
	run  func(b *Backend) error
}

func apply(p bootloader.Plan) func(b *Backend) error {
	return func(b *Backend) error {
		_, err := bootloader.Apply(b, p)
		return err
	}
}

// boot does what the bootloader does at a boot: pick, spend a try, write.
func boot(b *Backend) error {
	f, err := b.Load()
	if err != nil {
		return err
	}
	return b.Save(b.Simulate(f).After)
}

// goldenStart are the words before the walk: foreign bits in both (required
// and Bottlerocket's booted-once on A, legacy-BIOS-bootable and bit 60 on B)
// that must survive every step.
var goldenStart = map[bootloader.Slot]uint64{sA: 1<<57 | 1, sB: 1<<60 | 1<<2}

// goldenSteps walks an update, a failed update, a cancel and a rollback.
var goldenSteps = []step{
	{"Initial(A)", func(b *Backend) error { return b.Save(bootloader.Initial(sA)) }},
	{"Clear(B)", apply(bootloader.Clear(sB))},
	{"Trial(B,3)", apply(bootloader.Trial(sB, 3))},
	{"boot", boot},
	{"MarkGood(B)", apply(bootloader.MarkGood(sB))},
	{"Clear(A)", apply(bootloader.Clear(sA))},
	{"Trial(A,2)", apply(bootloader.Trial(sA, 2))},
	{"boot", boot},
	{"boot", boot},
	{"boot", boot},
	{"MarkBad(A)", apply(bootloader.MarkBad(sA))},
	{"Trial(A,3)", apply(bootloader.Trial(sA, 3))},
	{"Cancel(A)", apply(bootloader.Cancel(sA))},
	{"Trial(A,1)", apply(bootloader.Trial(sA, 1))},
	{"boot", boot},
	{"MarkGood(A)", apply(bootloader.MarkGood(sA))},
	{"Rollback(A)", apply(bootloader.Rollback(sA))},
	{"boot", boot},
}

// runGolden walks goldenSteps on b and renders each state as a line.
func runGolden(t testing.TB, b *Backend, store AttrStore) []string {
	t.Helper()
	line := func(name string) string {
		a, err1 := store.Attributes(sA)
		bb, err2 := store.Attributes(sB)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", name, err1, err2)
		}
		return fmt.Sprintf("%-12s A=%#016x B=%#016x", name, a, bb)
	}
	out := []string{line("start")}
	for _, s := range goldenSteps {
		if err := s.run(b); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		out = append(out, line(s.name))
	}
	return out
}

var goldenPath = filepath.Join("..", "..", "testdata", "gptprio", "transitions.golden")

const goldenHeader = `# Raw GPT attribute words of ROOT-A (partition 2) and ROOT-B (partition 3)
# after each step, from gptprio_test.go. Bits 48-51 priority, 52-55 tries,
# 56 successful; bits 0, 2, 57 and 60 were set beforehand by others and
# must never change. The interop test checks every line against cgpt.
`

func TestGoldenTransitions(t *testing.T) {
	st := &memStore{attrs: map[bootloader.Slot]uint64{sA: goldenStart[sA], sB: goldenStart[sB]}}
	got := strings.Join(runGolden(t, New(st), st), "\n") + "\n"
	if *update {
		if err := os.WriteFile(goldenPath, []byte(goldenHeader+got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != goldenHeader+got {
		t.Errorf("transitions differ from %s:\n got:\n%s\nwant:\n%s", goldenPath, got, want)
	}
}

// goldenLines parses the golden file into (step, A, B).
func goldenLines(t testing.TB) [][3]string {
	t.Helper()
	b, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	var out [][3]string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, [3]string{f[0], strings.TrimPrefix(f[1], "A="), strings.TrimPrefix(f[2], "B=")})
	}
	return out
}
