package sdboot

import (
	"sort"
	"testing"

	"sealift/bootloader"
)

func TestParseEntryName(t *testing.T) {
	tests := []struct {
		name string
		want EntryName
		bad  bool
	}{
		{name: "sealift-0001-a.conf", want: EntryName{Gen: 1, Slot: "A"}},
		{name: "sealift-0042-b+3.conf", want: EntryName{Gen: 42, Slot: "B", Counted: true, Left: 3}},
		{name: "sealift-0002-b+2-1.conf", want: EntryName{Gen: 2, Slot: "B", Counted: true, Left: 2, Done: 1, HasDone: true}},
		{name: "sealift-0002-a+0-3.conf", want: EntryName{Gen: 2, Slot: "A", Counted: true, Left: 0, Done: 3, HasDone: true}},
		{name: "sealift-0003-a+3-0.conf", want: EntryName{Gen: 3, Slot: "A", Counted: true, Left: 3, HasDone: true}},
		{name: "sealift-12345-a.conf", want: EntryName{Gen: 12345, Slot: "A"}},
		{name: "sealift-0000-b.conf", want: EntryName{Gen: 0, Slot: "B"}},
		{name: "sealift-001-a.conf", bad: true},   // GEN needs 4 digits
		{name: "sealift-00001-a.conf", bad: true}, // not canonical
		{name: "sealift-0001-A.conf", bad: true},  // upper-case slot
		{name: "sealift-0001-c.conf", bad: true},
		{name: "sealift-0001-a+03.conf", bad: true},
		{name: "sealift-0001-a+3-.conf", bad: true},
		{name: "sealift-0001-a+-1.conf", bad: true},
		{name: "sealift-0001-a+99999999999.conf", bad: true},
		{name: "sealift-0001-a.CONF", bad: true},
		{name: "sealift-0001-a", bad: true},
		{name: "other.conf", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEntryName(tt.name)
			if tt.bad {
				if err == nil {
					t.Fatalf("parsed as %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.name {
				t.Errorf("String() = %q", got.String())
			}
		})
	}
	if !IsEntryFile("SEALIFT-0001-A.CONF") || IsEntryFile("sealift-0001-a.conf.bak") || IsEntryFile("debian.conf") {
		t.Error("IsEntryFile")
	}
}

func TestEntryNameFlagsAndBoot(t *testing.T) {
	tests := []struct {
		in     string
		flags  bootloader.SlotFlags
		bad    bool
		booted string
	}{
		{"sealift-0001-a.conf", bootloader.SlotFlags{Successful: true}, false, "sealift-0001-a.conf"},
		{"sealift-0002-b+3.conf", bootloader.SlotFlags{Tries: 3}, false, "sealift-0002-b+2-1.conf"},
		{"sealift-0002-b+1-2.conf", bootloader.SlotFlags{Tries: 1}, false, "sealift-0002-b+0-3.conf"},
		{"sealift-0002-b+0-3.conf", bootloader.SlotFlags{}, true, "sealift-0002-b+0-4.conf"},
	}
	for _, tt := range tests {
		n, err := ParseEntryName(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if n.flags() != tt.flags || n.Bad() != tt.bad || n.Booted().String() != tt.booted {
			t.Errorf("%s: flags %+v bad %v booted %s", tt.in, n.flags(), n.Bad(), n.Booted())
		}
		// Our rename and systemd-boot's are the same.
		if next := parseSDEntry(tt.in).next(); next != tt.booted {
			t.Errorf("%s: systemd-boot renames to %s, Booted says %s", tt.in, next, tt.booted)
		}
	}
}

// TestParseSDEntry follows config_entry_parse_tries of systemd-boot 252.
func TestParseSDEntry(t *testing.T) {
	tests := []struct {
		file       string
		left, done int
		next       string
	}{
		{"a.conf", -1, -1, "a.conf"},
		{"b+2-0.conf", 2, 0, "b+1-1.conf"},
		{"b+3.conf", 3, 0, "b+2-1.conf"},
		{"b+0-2.conf", 0, 2, "b+0-3.conf"},
		{"x+y+1.conf", 1, 0, "x+y+0-1.conf"}, // the last '+' counts
		{"x+1+y.conf", -1, -1, "x+1+y.conf"}, // counter not at the end
		{"x+a.conf", -1, -1, "x+a.conf"},
		{"x+1-.conf", -1, -1, "x+1-.conf"},
		{"x+1.CONF", -1, -1, "x+1.CONF"}, // suffix compared case-sensitively
		{"UPPER+1.conf", 1, 0, "UPPER+0-1.conf"},
	}
	for _, tt := range tests {
		e := parseSDEntry(tt.file)
		if e.left != tt.left || e.done != tt.done || e.next() != tt.next {
			t.Errorf("%s: left %d done %d next %s; want %d %d %s", tt.file, e.left, e.done, e.next(), tt.left, tt.done, tt.next)
		}
	}
	if parseSDEntry("UPPER+1.conf").id != "upper+1.conf" {
		t.Error("id is not lower-cased")
	}
}

// TestVercmp uses systemd's own test vectors for strverscmp_improved.
func TestVercmp(t *testing.T) {
	ordered := []string{
		"~1", "ab", "abb", "abc", "0001", "002", "12", "122", "122.9", "123~rc1", "123",
		"123-a", "123-a.1", "123-a1", "123-a1.1", "123-3", "123-3.1", "123^patch1", "123^1",
		"123.a-1", "123.1-1", "123a-1", "124",
	}
	for i, a := range ordered {
		if vercmp(a, a) != 0 {
			t.Errorf("%q != itself", a)
		}
		for _, b := range ordered[i+1:] {
			if vercmp(a, b) >= 0 || vercmp(b, a) <= 0 {
				t.Errorf("want %q < %q, got %d/%d", a, b, vercmp(a, b), vercmp(b, a))
			}
		}
	}
	newer := [][2]string{
		{"123.45-67.88", "123.45-67.89"}, {"123.45-67.89", "123.45-67.89a"}, {"123.45-67.ab", "123.45-67.89"},
		{"123.45-67.9", "123.45-67.89"}, {"123.45-67", "123.45-67.89"}, {"123.45-66.89", "123.45-67.89"},
		{"123.45-9.99", "123.45-67.89"}, {"123.42-99.99", "123.45-67.89"}, {"123-99.99", "123.45-67.89"},
		{"123~rc1-99.99", "123.45-67.89"}, {"123~rc1-99.99", "123-45.67.89"}, {"123~rc1-99.99", "123~rc2-67.89"},
		{"123~rc1-99.99", "123^aa2-67.89"}, {"123~rc1-99.99", "123aa2-67.89"}, {"123-99.99", "123^aa2-67.89"},
		{"123-99.99", "123aa2-67.89"}, {"123^45-67.89", "123.45-67.89"}, {"123^aa1-99.99", "123^aa2-67.89"},
		{"123^aa2-67.89", "123aa2-67.89"}, {"123.aa2-67.89", "123aa2-67.89"}, {"123.aa2-67.89", "123.ab2-67.89"},
		{"12_3", "123"}, {"12", "12_3"}, {"12.3", "12_3"}, {"123", "123.0"}, {"123", "123_0"}, {"123..0", "123.0"},
		{"123", "123."}, {"2.0", "2_0"}, {"1.0~rc1", "1.0"}, {"1.0", "1.0^"}, {"1.0^git1", "1.01"}, {"4.999.9", "5.0"},
		{"1.fc17", "1b.fc17"}, {"10.1xyz", "10xyz"}, {"xyz.4", "2"},
		// What sealift relies on: generations compare as numbers.
		{"sealift-0009-b.conf", "sealift-0010-a.conf"},
		{"sealift-9999-b+3.conf", "sealift-10000-a.conf"},
		{"sealift-0002-a.conf", "sealift-0002-b.conf"},
		{"sealift-0002-b.conf", "sealift-0002-b+1-2.conf"},
		{"sealift-0001-a.conf", "sealift-0002-a+0-9.conf"},
	}
	for _, p := range newer {
		if vercmp(p[0], p[1]) >= 0 || vercmp(p[1], p[0]) <= 0 {
			t.Errorf("want %q < %q", p[0], p[1])
		}
	}
	equal := [][2]string{
		{"123_aa2-67.89", "123aa+2-67.89"}, {"0_", "0"}, {"_0_", "0"}, {"10.0001", "10.1"},
		{"a+", "a_"}, {"+a", "_a"}, {"1.1.α", "1.1.β"}, {"1.1.αα", "1.1.α"},
	}
	for _, p := range equal {
		if vercmp(p[0], p[1]) != 0 {
			t.Errorf("want %q == %q, got %d", p[0], p[1], vercmp(p[0], p[1]))
		}
	}
}

// TestSDOrder checks systemd-boot's entry order on realistic directories:
// the first entry is the one it boots.
func TestSDOrder(t *testing.T) {
	tests := []struct {
		files []string
		first string
	}{
		{[]string{"a.conf", "b+2-0.conf"}, "b+2-0.conf"},
		{[]string{"a.conf", "b+0-2.conf"}, "a.conf"},
		{[]string{"sealift-0001-a.conf", "sealift-0002-b+3.conf"}, "sealift-0002-b+3.conf"},
		{[]string{"sealift-0003-a.conf", "sealift-0002-b+3.conf"}, "sealift-0003-a.conf"},
		{[]string{"sealift-0001-a.conf", "sealift-0002-b+0-3.conf"}, "sealift-0001-a.conf"},
		{[]string{"sealift-0001-a+0-1.conf", "sealift-0002-b+0-3.conf"}, "sealift-0002-b+0-3.conf"},
		{[]string{"sealift-0009-a.conf", "sealift-0010-b.conf"}, "sealift-0010-b.conf"},
		{[]string{"sealift-0002-b+1-1.conf", "sealift-0002-b.conf"}, "sealift-0002-b+1-1.conf"},
	}
	for _, tt := range tests {
		var es []sdEntry
		for _, f := range tt.files {
			es = append(es, parseSDEntry(f))
		}
		sort.SliceStable(es, func(i, j int) bool { return sdCompare(es[i], es[j]) < 0 })
		if es[0].file != tt.first {
			t.Errorf("%v: first %s, want %s", tt.files, es[0].file, tt.first)
		}
	}
}

func TestVercmpEdges(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "_", 0}, {"_", "_", 0}, {"", "~", 1}, {"~", "", -1}, {"~", "~", 0},
		{"0", "0___", 0}, {"_0", "0", 0}, {"a", "0", -1}, {"0", "a", 1},
	} {
		if got := vercmp(tt.a, tt.b); got != tt.want {
			t.Errorf("vercmp(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
