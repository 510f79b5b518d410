package grubenv

import (
	"reflect"
	"strings"
	"testing"

	"sealift/bootloader"
)

// TestSimulateAgreesWithModel runs every state the block can hold through
// the replayed grub.cfg and through the model. They must agree except in
// the documented fallback, where GRUB boots a slot the model would not.
func TestSimulateAgreesWithModel(t *testing.T) {
	checked, fallbacks := 0, 0
	for _, f := range allFlags() {
		if !representable(f) {
			continue
		}
		checked++
		got := Simulate(f, nil)
		want := bootloader.SimulateModel(f)
		if want.Slot == "" {
			// Documented difference: nothing is eligible, GRUB still boots
			// the first slot of ORDER (or A), spends nothing, saves nothing.
			fallbacks++
			first := bootloader.SlotA
			if o := Order(f); len(o) > 0 {
				first = o[0]
			}
			if got.Slot != first || !reflect.DeepEqual(got.After, f) || !strings.Contains(got.Note, "anyway") {
				t.Errorf("%v: fallback decision %+v, want slot %s, flags unchanged, a note", f, got, first)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v:\n grub  %#v\n model %#v", f, got, want)
		}
	}
	if checked != 320 || fallbacks == 0 {
		t.Errorf("checked %d states (%d fallbacks)", checked, fallbacks)
	}
}

func TestSimulateSequences(t *testing.T) {
	a, b := bootloader.SlotA, bootloader.SlotB
	trialB := bootloader.Flags{a: {Priority: 1, Successful: true}, b: {Priority: 2, Tries: 3}}
	tests := []struct {
		name    string
		start   bootloader.Flags
		kernels []bootloader.Slot
		boots   []string // decision per boot: slot + tries left for trials
	}{
		{"failing trial falls back after 3 boots", trialB, []bootloader.Slot{a, b},
			[]string{"B 2", "B 1", "B 0", "A", "A"}},
		{"B without kernel is skipped and burnt", trialB, []bootloader.Slot{a},
			[]string{"A", "A"}},
		{"neither good nor tried: boots first of ORDER", bootloader.Flags{a: {Priority: 1}, b: {Priority: 2}}, []bootloader.Slot{a, b},
			[]string{"B 0", "B 0"}},
		{"nothing in ORDER: A", bootloader.Flags{}, []bootloader.Slot{a, b},
			[]string{"A 0"}},
		{"nothing in ORDER, A has no kernel: nothing boots", bootloader.Flags{}, []bootloader.Slot{b},
			[]string{"-"}},
		{"fallback skips a slot without kernel", bootloader.Flags{a: {Priority: 1}, b: {Priority: 2}}, []bootloader.Slot{a},
			[]string{"A 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			has := map[bootloader.Slot]bool{}
			for _, s := range tt.kernels {
				has[s] = true
			}
			f := tt.start
			var got []string
			for range tt.boots {
				d := Simulate(f, func(s bootloader.Slot) bool { return has[s] })
				switch {
				case d.Slot == "":
					got = append(got, "-")
				case d.Trial:
					got = append(got, string(d.Slot)+" "+string(rune('0'+d.TriesLeft)))
				default:
					got = append(got, string(d.Slot))
				}
				f = d.After
			}
			if strings.Join(got, ",") != strings.Join(tt.boots, ",") {
				t.Errorf("boots %v, want %v", got, tt.boots)
			}
		})
	}
}

func TestBackendSimulateUsesESP(t *testing.T) {
	esp := espWithKernels(t, bootloader.SlotA)
	f := bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 3}}
	d := New(esp).Simulate(f)
	if d.Slot != bootloader.SlotA || d.After["B"].Tries != 0 || !strings.Contains(d.Note, "slot B skipped") {
		t.Errorf("B has no kernel: %+v", d)
	}
	if err := bootloader.WriteBootFiles(esp, bootloader.SlotB, bootloader.BootFiles{Kernel: []byte("k"), Version: "2"}); err != nil {
		t.Fatal(err)
	}
	if d := New(esp).Simulate(f); d.Slot != bootloader.SlotB || !d.Trial || d.TriesLeft != 2 {
		t.Errorf("B has a kernel: %+v", d)
	}
}

// TestRunScriptOnForeignBlocks covers blocks the script meets that sealift
// did not write: missing variables take the script's defaults, garbage in
// ORDER is ignored, a counter is only matched as "1".."15".
func TestRunScriptOnForeignBlocks(t *testing.T) {
	all := func(bootloader.Slot) bool { return true }
	tests := []struct {
		body   string
		chosen bootloader.Slot
		saved  bool
		after  map[string]string
	}{
		{"", "A", false, nil}, // fallback on defaults
		{"ORDER=C B\nB_TRY=2\n", "B", true, map[string]string{"B_TRY": "1", "A_TRY": "0"}},
		{"ORDER=B\nB_TRY=02\n", "B", false, map[string]string{"B_TRY": "02"}},
		{"ORDER=B A\nB_OK=1\nB_TRY=3\n", "B", false, map[string]string{"B_TRY": "3"}},
		{"other=x\nORDER=A\nA_TRY=1\n", "A", true, map[string]string{"A_TRY": "0", "B_TRY": "0", "other": "x"}},
	}
	for _, tt := range tests {
		e, err := Parse(block(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		r := runScript(e, all)
		if r.chosen != tt.chosen || r.saved != tt.saved {
			t.Errorf("%q: chose %q saved %v, want %q %v", tt.body, r.chosen, r.saved, tt.chosen, tt.saved)
		}
		for k, v := range tt.after {
			if got, _ := r.env.Get(k); got != v {
				t.Errorf("%q: after %s=%q, want %q", tt.body, k, got, v)
			}
		}
	}
}
