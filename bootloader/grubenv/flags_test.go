package grubenv

import (
	"reflect"
	"testing"

	"sealift/bootloader"
)

func TestSetFlagsVariables(t *testing.T) {
	tests := []struct {
		name  string
		flags bootloader.Flags
		want  map[string]string
	}{
		{"initial A", bootloader.Initial(bootloader.SlotA),
			map[string]string{"ORDER": "A", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}},
		{"trial B", bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 3}},
			map[string]string{"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "3"}},
		{"tie: A first", bootloader.Flags{"A": {Priority: 5, Tries: 1}, "B": {Priority: 5, Tries: 15}},
			map[string]string{"ORDER": "A B", "A_TRY": "1", "B_TRY": "15"}},
		{"both cleared", bootloader.Flags{},
			map[string]string{"ORDER": "", "A_OK": "0", "B_OK": "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEnv()
			if err := SetFlags(e, tt.flags); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got, _ := e.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
	if err := SetFlags(NewEnv(), bootloader.Flags{"A": {Priority: 1, Tries: 16}}); err == nil {
		t.Error("SetFlags accepted tries 16")
	}
}

func TestFlagsFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    bootloader.Flags
		wantErr bool
	}{
		{name: "trial B", body: "ORDER=B A\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=2\n",
			want: bootloader.Flags{"A": {Priority: 1, Successful: true}, "B": {Priority: 2, Tries: 2}}},
		{name: "only A", body: "ORDER=A\nA_OK=1\n",
			want: bootloader.Flags{"A": {Priority: 2, Successful: true}, "B": {}}},
		{name: "extra spaces", body: "ORDER=  B \t A \n",
			want: bootloader.Flags{"A": {Priority: 1}, "B": {Priority: 2}}},
		{name: "missing ORDER is the script's default", body: "",
			want: bootloader.Flags{"A": {Priority: 2}, "B": {Priority: 1}}},
		{name: "empty ORDER", body: "ORDER=\nB_TRY=3\n",
			want: bootloader.Flags{"A": {}, "B": {Tries: 3}}},
		{name: "unknown slot", body: "ORDER=A C\n", wantErr: true},
		{name: "lower-case slot", body: "ORDER=a\n", wantErr: true},
		{name: "duplicate slot", body: "ORDER=A A\n", wantErr: true},
		{name: "OK not 0/1", body: "A_OK=yes\n", wantErr: true},
		{name: "TRY not canonical", body: "A_TRY=03\n", wantErr: true},
		{name: "TRY too big", body: "A_TRY=16\n", wantErr: true},
		{name: "TRY negative", body: "A_TRY=-1\n", wantErr: true},
		{name: "TRY empty", body: "A_TRY=\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(block(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := FlagsFromEnv(e)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("FlagsFromEnv = %v, want error", got)
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
	for _, a := range per {
		for _, b := range per {
			all = append(all, bootloader.Flags{bootloader.SlotA: a, bootloader.SlotB: b})
		}
	}
	return all
}

// representable reports whether the block holds f exactly: the priorities
// must already be the positions ORDER gives back (2 for the first, 1 for
// the second).
func representable(f bootloader.Flags) bool {
	e := NewEnv()
	if err := SetFlags(e, f); err != nil {
		return false
	}
	back, err := FlagsFromEnv(e)
	return err == nil && reflect.DeepEqual(back, f)
}

func TestFlagsRoundTrip(t *testing.T) {
	n := 0
	for _, f := range allFlags() {
		if representable(f) {
			n++
		}
	}
	// Exactly 5 priority pairs ({0,0},{2,0},{0,2},{2,1},{1,2}) x 8 x 8.
	if n != 5*8*8 {
		t.Errorf("%d representable states, want %d", n, 5*8*8)
	}
	// Any other state keeps everything but the priority numbers.
	for _, f := range allFlags() {
		e := NewEnv()
		if err := SetFlags(e, f); err != nil {
			t.Fatal(err)
		}
		back, err := FlagsFromEnv(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range bootloader.Slots {
			if back[s].Tries != f[s].Tries || back[s].Successful != f[s].Successful || (back[s].Priority > 0) != (f[s].Priority > 0) {
				t.Errorf("%v -> %v: slot %s changed", f, back, s)
			}
		}
		p1, ok1 := f.Preferred()
		p2, ok2 := back.Preferred()
		if p1 != p2 || ok1 != ok2 {
			t.Errorf("%v -> %v: preferred slot changed", f, back)
		}
	}
}
