package sdboot

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"sealift/bootloader"
)

// allFlags enumerates priorities 0..2, tries 0..3 and ok 0/1 for both slots.
func allFlags() []bootloader.Flags {
	var per []bootloader.SlotFlags
	for p := 0; p <= 2; p++ {
		for tr := 0; tr <= 3; tr++ {
			for _, ok := range []bool{false, true} {
				per = append(per, bootloader.SlotFlags{Priority: p, Tries: tr, Successful: ok})
			}
		}
	}
	var all []bootloader.Flags
	for _, x := range per {
		for _, y := range per {
			all = append(all, bootloader.Flags{a: x, b: y})
		}
	}
	return all
}

// TestSimulateAgreesWithModel runs every state entries can hold exactly
// through Simulate and through the model. They must agree except when every
// entry is bad, where systemd-boot still boots the highest one.
func TestSimulateAgreesWithModel(t *testing.T) {
	checked, differ := 0, 0
	for _, f := range allFlags() {
		if !reflect.DeepEqual(normalize(f), f) {
			continue
		}
		checked++
		got := Simulate(f, nil)
		want := bootloader.SimulateModel(f)
		if want.Slot == "" && len(f.Order()) > 0 {
			// Documented difference: only bad entries are left.
			differ++
			first := f.Order()[0]
			if got.Slot != first || !got.Trial || got.TriesLeft != 0 || !reflect.DeepEqual(got.After, f) || !strings.Contains(got.Note, "anyway") {
				t.Errorf("%v: all-bad decision %#v", f, got)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v:\n sd-boot %#v\n model   %#v", f, got, want)
		}
	}
	// Priority pairs {0,0},{2,0},{0,2},{2,1},{1,2}; per slot with P>0: 3
	// trial counts + bad + good = 5 states, with P0 just 1.
	if want := 1 + 5 + 5 + 25 + 25; checked != want || differ == 0 {
		t.Errorf("checked %d states (%d differ), want %d", checked, differ, want)
	}
}

func TestSimulateKernels(t *testing.T) {
	f := bootloader.Flags{a: {Priority: 1, Successful: true}, b: {Priority: 2, Tries: 3}}
	d := Simulate(f, func(s bootloader.Slot) bool { return s == a })
	if d.Slot != a || d.Trial || !reflect.DeepEqual(d.After, f) || !strings.Contains(d.Note, "slot B's entry is ignored") {
		t.Errorf("B without kernel: %#v", d)
	}
	d = Simulate(f, func(bootloader.Slot) bool { return false })
	if d.Slot != "" || !strings.Contains(d.Note, "slot A's entry is ignored") {
		t.Errorf("no kernels: %#v", d)
	}
	esp := newESP(t, a)
	if d := New(esp).Simulate(f); d.Slot != a {
		t.Errorf("Backend.Simulate without B's kernel: %#v", d)
	}
	esp = newESP(t, a, b)
	if d := New(esp).Simulate(f); d.Slot != b || d.TriesLeft != 2 {
		t.Errorf("Backend.Simulate with both kernels: %#v", d)
	}
}

// TestReferenceQemuRun replays /work/shared/reference/qemu-ab/sdboot-summary.txt,
// recorded from systemd-boot 252 under qemu: a failing B (b+2-0) is tried
// twice and then a.conf boots; a good B (b+3-0) is tried once and blessed.
func TestReferenceQemuRun(t *testing.T) {
	setup := func(bName string) bootloader.DirFS {
		esp := bootloader.DirFS(t.TempDir())
		_ = esp.MkdirAll("A")
		_ = esp.MkdirAll("B")
		_ = esp.WriteFile("A/vmlinuz", []byte("k"))
		_ = esp.WriteFile("B/vmlinuz", []byte("k"))
		_ = esp.MkdirAll(EntriesDir)
		_ = esp.WriteFile(path.Join(EntriesDir, "a.conf"), []byte("title slot A\nlinux /A/vmlinuz\n"))
		_ = esp.WriteFile(path.Join(EntriesDir, bName), []byte("title slot B\nlinux /B/vmlinuz\n"))
		return esp
	}
	esp := setup("b+2-0.conf")
	var got []string
	for range 3 {
		sel := bootOnce(t, esp)
		got = append(got, "sel="+sel+" entries: "+strings.Join(entryFiles(t, esp), " "))
	}
	want := []string{
		"sel=b+2-0.conf entries: a.conf b+1-1.conf",
		"sel=b+1-1.conf entries: a.conf b+0-2.conf",
		"sel=a.conf entries: a.conf b+0-2.conf",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("badB:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	esp = setup("b+3-0.conf")
	if sel := bootOnce(t, esp); sel != "b+3-0.conf" || strings.Join(entryFiles(t, esp), " ") != "a.conf b+2-1.conf" {
		t.Errorf("goodB: sel %s, entries %v", sel, entryFiles(t, esp))
	}
}

// TestSequences runs whole update stories through Apply, the firmware
// emulation (bootOnce) and Simulate: at every boot Simulate must name the
// slot systemd-boot picks and predict the flags Load reads afterwards.
func TestSequences(t *testing.T) {
	type step struct {
		plan bootloader.Plan // nil: boot once
		want string          // after a boot: the slot booted ("-" for none)
	}
	boot := func(want string) step { return step{want: want} }
	tests := []struct {
		name  string
		steps []step
		final []string
	}{
		{"failing update falls back to A", []step{
			{plan: bootloader.Trial(b, 2)}, boot("B"), boot("B"), boot("A"), boot("A"),
		}, []string{"sealift-0001-a.conf", "sealift-0002-b+0-2.conf"}},
		{"good update is blessed", []step{
			{plan: bootloader.Trial(b, 3)}, boot("B"), {plan: bootloader.MarkGood(b)}, boot("B"),
		}, []string{"sealift-0001-a.conf", "sealift-0002-b.conf"}},
		{"health check fails: marked bad", []step{
			{plan: bootloader.Trial(b, 3)}, boot("B"), {plan: bootloader.MarkBad(b)}, boot("A"),
		}, []string{"sealift-0001-a.conf"}},
		{"update, then rollback, then update again", []step{
			{plan: bootloader.Trial(b, 3)}, boot("B"), {plan: bootloader.MarkGood(b)}, boot("B"),
			{plan: bootloader.Rollback(b)}, boot("A"),
			{plan: bootloader.Clear(b)}, {plan: bootloader.Trial(b, 1)}, boot("B"), boot("A"),
		}, []string{"sealift-0003-a.conf", "sealift-0004-b+0-1.conf"}},
		{"cancel before reboot", []step{
			{plan: bootloader.Trial(b, 3)}, {plan: bootloader.Cancel(b)}, boot("A"),
		}, []string{"sealift-0001-a.conf"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			esp := newESP(t, a, b)
			if err := Install(esp, initial); err != nil {
				t.Fatal(err)
			}
			be := New(esp)
			for i, st := range tt.steps {
				if st.plan != nil {
					if _, err := bootloader.Apply(be, st.plan); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					continue
				}
				f, err := be.Load()
				if err != nil {
					t.Fatal(err)
				}
				d := be.Simulate(f)
				got := string(slotOf(t, bootOnce(t, esp)))
				if got == "" {
					got = "-"
				}
				if got != st.want || string(d.Slot) != strings.Trim(got, "-") {
					t.Fatalf("step %d: booted %s, Simulate %q, want %s", i, got, d.Slot, st.want)
				}
				after, err := be.Load()
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(after, d.After) {
					t.Fatalf("step %d: flags after boot %v, Simulate predicted %v", i, after, d.After)
				}
			}
			if got := entryFiles(t, esp); !reflect.DeepEqual(got, tt.final) {
				t.Errorf("entries %v, want %v", got, tt.final)
			}
		})
	}
}

// transition is an edge of the state exploration.
type transition struct {
	name string
	plan bootloader.Plan // nil: one boot by the firmware
}

func transitions() []transition {
	var ts []transition
	for _, s := range bootloader.Slots {
		ts = append(ts,
			transition{"Clear(" + string(s) + ")", bootloader.Clear(s)},
			transition{"Trial(" + string(s) + ",1)", bootloader.Trial(s, 1)},
			transition{"Trial(" + string(s) + ",3)", bootloader.Trial(s, 3)},
			transition{"MarkGood(" + string(s) + ")", bootloader.MarkGood(s)},
			transition{"MarkBad(" + string(s) + ")", bootloader.MarkBad(s)},
			transition{"Rollback(" + string(s) + ")", bootloader.Rollback(s)},
			transition{"Cancel(" + string(s) + ")", bootloader.Cancel(s)},
		)
	}
	return append(ts, transition{"boot", nil})
}

// TestTransitionsAndPowerCuts explores every state reachable from a fresh
// disk (slot A or B installed) by Clear, Trial, MarkGood, MarkBad,
// Rollback, Cancel and firmware boots, a few steps deep. For every Save it
// checks the flags read back, and then cuts the power after each of its
// file operations in turn: the entry systemd-boot picks on the half-written
// ESP must be one it picked before or would pick after, and never a bad or
// missing one where both of those were good.
func TestTransitionsAndPowerCuts(t *testing.T) {
	depth := 4
	if testing.Short() {
		depth = 3
	}
	type node struct {
		esp  bootloader.DirFS
		path string
	}
	seen := map[string]bool{}
	var frontier []node
	for _, s := range bootloader.Slots {
		esp := newESP(t, a, b)
		if err := Install(esp, bootloader.Initial(s)); err != nil {
			t.Fatal(err)
		}
		frontier = append(frontier, node{esp, "Install(" + string(s) + ")"})
		seen[stateKey(t, esp)] = true
	}
	saves, cuts := 0, 0
	for d := 0; d < depth; d++ {
		var next []node
		for _, n := range frontier {
			for _, tr := range transitions() {
				where := n.path + " " + tr.name
				esp := copyESP(t, n.esp)
				if tr.plan == nil {
					bootOnce(t, esp)
				} else {
					ok, c := checkSave(t, n.esp, tr.plan, where)
					if !ok {
						continue
					}
					saves++
					cuts += c
					if _, err := bootloader.Apply(New(esp), tr.plan); err != nil {
						t.Fatalf("%s: %v", where, err)
					}
				}
				if k := stateKey(t, esp); !seen[k] {
					seen[k] = true
					next = append(next, node{esp, where})
				}
			}
		}
		frontier = next
	}
	if saves < 100 || cuts == 0 {
		t.Errorf("explored %d states, %d saves, %d power cuts: too few", len(seen), saves, cuts)
	}
	t.Logf("%d states, %d saves, %d power cuts", len(seen), saves, cuts)
}

func stateKey(t *testing.T, esp bootloader.DirFS) string {
	files := entryFiles(t, esp)
	sort.Strings(files)
	return strings.Join(files, " ")
}

// checkSave applies plan to a copy of esp and checks the result and every
// interruption of it. ok is false when the plan refuses the state.
//
// The invariant for a power cut: if systemd-boot had something to boot
// before, it has something in between; and if both the old
// and the new pick are good (not +0-N) entries, the pick in between is a
// good entry of one of those two slots. (When the new state has no good
// entry, e.g. both slots on their last try made bad, booting the other
// still-good slot in between is fine: it is more bootable, not less.)
func checkSave(t *testing.T, esp bootloader.DirFS, plan bootloader.Plan, where string) (ok bool, cutsChecked int) {
	t.Helper()
	full := copyESP(t, esp)
	before, beforeOK := selected(t, full)
	rec := &cutFS{FS: full, n: -1}
	next, err := bootloader.Apply(New(rec), plan)
	if err != nil {
		if errors.Is(err, bootloader.ErrNotBootable) || errors.Is(err, bootloader.ErrNoPendingTry) {
			return false, 0
		}
		t.Fatalf("%s: %v", where, err)
	}
	got, err := New(full).Load()
	if err != nil {
		t.Fatalf("%s: Load: %v", where, err)
	}
	if want := normalize(next); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: Load after Save = %v, want %v", where, got, want)
	}
	for _, name := range entryFiles(t, full) {
		if strings.HasPrefix(name, ".") {
			t.Errorf("%s: stray file %s", where, name)
		}
	}
	after, afterOK := selected(t, full)
	// Simulate must name what the firmware picks on the saved entries.
	if d := New(full).Simulate(got); string(d.Slot) != string(slotOfEntry(t, after, afterOK)) {
		t.Errorf("%s: Simulate boots %q, firmware picks %q", where, d.Slot, after.file)
	}
	for k := 0; k < len(rec.ops); k++ {
		part := copyESP(t, esp)
		_, err := bootloader.Apply(New(&cutFS{FS: part, n: k}), plan)
		if !errors.Is(err, errPowerCut) {
			t.Fatalf("%s: cut after %d ops: %v", where, k, err)
		}
		mid, midOK := selected(t, part)
		desc := fmt.Sprintf("%s, power cut after %v", where, rec.ops[:k])
		bothGood := beforeOK && before.left != 0 && afterOK && after.left != 0
		midSlot := slotOfEntry(t, mid, midOK)
		switch {
		case !midOK && beforeOK:
			t.Errorf("%s: nothing to boot (before %q, after %q)", desc, before.file, after.file)
		case bothGood && mid.left == 0:
			t.Errorf("%s: boots bad entry %s between two good picks", desc, mid.file)
		case bothGood && midSlot != slotOfEntry(t, before, true) && midSlot != slotOfEntry(t, after, true):
			t.Errorf("%s: boots %s, neither the old pick %s nor the new one %s", desc, mid.file, before.file, after.file)
		}
		cutsChecked++
	}
	return true, cutsChecked
}

func slotOfEntry(t *testing.T, e sdEntry, ok bool) bootloader.Slot {
	if !ok {
		return ""
	}
	return slotOf(t, e.file)
}

// TestPowerCutsBetweenAnyStates cuts the power inside every Save that needs
// more than one file operation, between any two states entries can hold
// (not only those the transitions produce): this is where the order of
// operations decides whether the disk stays bootable.
func TestPowerCutsBetweenAnyStates(t *testing.T) {
	// Tries 1, 2 and 3 only change the digit in a name, not the order of
	// operations; one trial count keeps the 25x25 pairs fast enough.
	var states []bootloader.Flags
	for _, f := range allFlags() {
		if reflect.DeepEqual(normalize(f), f) && f[a].Tries%2 == 0 && f[b].Tries%2 == 0 {
			states = append(states, f)
		}
	}
	var multi atomic.Int64
	t.Run("from", func(t *testing.T) {
		for i, from := range states {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				// The work is fsync-bound; overlap it.
				t.Parallel()
				esp := newESP(t, a, b)
				if err := New(esp).Save(from); err != nil {
					t.Fatal(err)
				}
				for _, to := range states {
					ops, err := New(esp).plan(to)
					if err != nil {
						t.Fatal(err)
					}
					if len(ops) < 2 {
						continue
					}
					multi.Add(1)
					set := func(bootloader.Flags) (bootloader.Flags, error) { return to.Clone(), nil }
					if ok, _ := checkSave(t, esp, set, fmt.Sprintf("%v -> %v", from, to)); !ok {
						t.Fatalf("%v -> %v refused", from, to)
					}
				}
			})
		}
	})
	if multi.Load() < 50 {
		t.Errorf("only %d saves with several operations", multi.Load())
	}
	t.Logf("%d saves with several operations", multi.Load())
}
