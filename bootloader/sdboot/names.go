// Package sdboot is sealift's backend for systemd-boot's automatic boot
// assessment: each bootable slot has one Boot Loader Specification entry in
// loader/entries/ on the ESP, and the boot flags are encoded in its file
// name, which systemd-boot itself rewrites on every trial boot.
//
//	sealift-<GEN>-<a|b>[+LEFT[-DONE]].conf
//
// No entry means priority 0. An entry without a counter is successful. A
// counter means "on trial": LEFT tries remain, DONE were spent; +0-DONE is
// an entry systemd-boot considers bad and sorts last. The slot whose entry
// has the higher generation GEN has the higher priority, because with no
// "default" in loader.conf and no sort-key in the entries, systemd-boot
// boots the entry whose file name sorts highest by version comparison.
//
// The rules are those of systemd-boot 252 (Debian 12), checked under qemu
// (see /work/shared/reference/qemu-ab/sdboot-summary.txt) and against its
// source: entries with no tries left lose to every other entry; among the
// rest the highest id (the lower-cased file name, counter included) by
// strverscmp_improved wins; before booting an entry with a counter it is
// renamed from +LEFT-DONE to +(LEFT-1)-(DONE+1); entries whose linux file is
// missing are dropped; if all entries are bad the highest bad one boots.
//
// sealift assumes it owns loader/entries: a foreign entry with a sort-key
// would sort before sealift's, and an EFI variable (LoaderEntryDefault,
// LoaderEntryOneShot, set by `bootctl set-default`) overrides the order.
package sdboot

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"sealift/bootloader"
)

// EntryName is a parsed sealift entry file name.
type EntryName struct {
	// Gen orders the two slots' entries: the higher one is preferred.
	Gen  int
	Slot bootloader.Slot
	// Counted is true when the name carries a boot counter.
	Counted bool
	Left    int
	Done    int
	// HasDone keeps "+3" and "+3-0" apart, so a parsed name renders back to
	// the same file name and is never renamed needlessly.
	HasDone bool
}

var entryRE = regexp.MustCompile(`^sealift-([0-9]{4,})-([ab])(?:\+([0-9]+)(?:-([0-9]+))?)?\.conf$`)

// maxCounter is systemd-boot's bound (INT_MAX) on either counter.
const maxCounter = 1<<31 - 1

// IsEntryFile reports whether a file in loader/entries claims to be a
// sealift entry (whether or not it parses).
func IsEntryFile(name string) bool {
	l := strings.ToLower(name)
	return strings.HasPrefix(l, "sealift-") && strings.HasSuffix(l, ".conf")
}

// ParseEntryName parses "sealift-0002-b+2-1.conf". Only the canonical
// spelling is accepted (lower case, no superfluous leading zeros), which is
// what sealift and systemd-boot write.
func ParseEntryName(name string) (EntryName, error) {
	m := entryRE.FindStringSubmatch(name)
	if m == nil {
		return EntryName{}, fmt.Errorf("sdboot: %q is not a sealift entry name (sealift-<GEN>-<a|b>[+LEFT[-DONE]].conf)", name)
	}
	n := EntryName{Slot: bootloader.Slot(strings.ToUpper(m[2]))}
	var err error
	if n.Gen, err = strconv.Atoi(m[1]); err != nil {
		return EntryName{}, fmt.Errorf("sdboot: %q: generation: %w", name, err)
	}
	if m[3] != "" {
		n.Counted = true
		if n.Left, err = counter(m[3]); err != nil {
			return EntryName{}, fmt.Errorf("sdboot: %q: tries left: %w", name, err)
		}
		if m[4] != "" {
			n.HasDone = true
			if n.Done, err = counter(m[4]); err != nil {
				return EntryName{}, fmt.Errorf("sdboot: %q: tries done: %w", name, err)
			}
		}
	}
	if n.String() != name {
		return EntryName{}, fmt.Errorf("sdboot: %q is not in canonical form (%q)", name, n.String())
	}
	return n, nil
}

func counter(s string) (int, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > maxCounter {
		return 0, fmt.Errorf("%q out of range", s)
	}
	return int(v), nil
}

// String renders the file name.
func (n EntryName) String() string {
	s := fmt.Sprintf("sealift-%04d-%s", n.Gen, strings.ToLower(string(n.Slot)))
	if n.Counted {
		s += "+" + strconv.Itoa(n.Left)
		if n.HasDone {
			s += "-" + strconv.Itoa(n.Done)
		}
	}
	return s + ".conf"
}

// Bad reports whether systemd-boot sorts the entry last: a counter with no
// tries left.
func (n EntryName) Bad() bool { return n.Counted && n.Left == 0 }

// Booted is the name systemd-boot renames the entry to right before booting
// it; an entry without a counter keeps its name.
func (n EntryName) Booted() EntryName {
	if !n.Counted {
		return n
	}
	if n.Left > 0 {
		n.Left--
	}
	if n.Done < maxCounter {
		n.Done++
	}
	n.HasDone = true
	return n
}

// flags is what the name says about its slot, priority aside.
func (n EntryName) flags() bootloader.SlotFlags {
	if n.Counted {
		return bootloader.SlotFlags{Tries: n.Left}
	}
	return bootloader.SlotFlags{Successful: true}
}

// sdEntry is a loader/entries file as systemd-boot 252 sees it, whoever
// wrote it: its id and its boot counter (left and done are -1 without one).
type sdEntry struct {
	file       string
	id         string
	left, done int
}

// parseSDEntry follows systemd-boot's config_entry_parse_tries: the counter
// starts after the last '+', is "LEFT" or "LEFT-DONE" in decimal, and must
// be followed by exactly ".conf"; otherwise the entry has no counter.
func parseSDEntry(file string) sdEntry {
	e := sdEntry{file: file, id: strings.ToLower(file), left: -1, done: -1}
	plus := strings.LastIndexByte(file, '+')
	if plus < 0 {
		return e
	}
	rest := file[plus+1:]
	left, rest, ok := leadingNumber(rest)
	if !ok {
		return e
	}
	done := 0
	if strings.HasPrefix(rest, "-") {
		if done, rest, ok = leadingNumber(rest[1:]); !ok {
			return e
		}
	}
	if rest != ".conf" {
		return e
	}
	e.left, e.done = left, done
	return e
}

func leadingNumber(s string) (int, string, bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, s, false
	}
	v, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil || v > maxCounter {
		return 0, s, false
	}
	return int(v), s[i:], true
}

// next is the file name after systemd-boot bumped the counter.
func (e sdEntry) next() string {
	if e.left < 0 {
		return e.file
	}
	plus := strings.LastIndexByte(e.file, '+')
	left := max(e.left-1, 0)
	done := min(e.done+1, maxCounter)
	return fmt.Sprintf("%s+%d-%d.conf", e.file[:plus], left, done)
}

// sdCompare is systemd-boot 252's entry order for Type #1 entries without
// a sort-key: negative when a sorts first (is preferred). Bad entries go
// last, then the higher id wins; equal ids (impossible within one
// directory) fall back to the counters.
func sdCompare(a, b sdEntry) int {
	if r := cmpBool(a.left == 0, b.left == 0); r != 0 {
		return r
	}
	if r := -vercmp(a.id, b.id); r != 0 {
		return r
	}
	if a.left < 0 || b.left < 0 {
		return 0
	}
	if a.left != b.left {
		return cmpInt(b.left, a.left)
	}
	return cmpInt(a.done, b.done)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// vercmp is systemd's strverscmp_improved: strings are split into numeric
// and alphabetic segments, digits compare numerically ("0010" > "9"), and
// '~', '-', '^', '.' before a segment rank it (in that order from oldest);
// other characters only separate segments.
//
// systemd revised the function around v252 (an empty numeric segment now
// loses to a non-empty one, "" no longer short-circuits); this follows the
// revised form, which systemd's test vectors pin. The two differ only when
// one string has a separator where the other has digits after equal
// segments, which sealift's entry names never produce: both ids have the
// same shape up to the slot letter, and the counter's digits meet the '.'
// of ".conf", which the separator rule decides identically in both.
func vercmp(a, b string) int {
	for {
		a = strings.TrimLeftFunc(a, func(r rune) bool { return !isVersionChar(r) })
		b = strings.TrimLeftFunc(b, func(r rune) bool { return !isVersionChar(r) })
		la, lb := len(a), len(b)

		if first(a) == '~' || first(b) == '~' {
			if r := cmpBool(first(a) != '~', first(b) != '~'); r != 0 {
				return r
			}
			a, b = a[1:], b[1:]
		}
		if a == "" || b == "" {
			// The longer string is newer, except after '~' (handled above).
			return cmpInt(int(first(a)), int(first(b)))
		}
		for _, sep := range []byte{'-', '^', '.'} {
			if first(a) == sep || first(b) == sep {
				if r := cmpBool(first(a) != sep, first(b) != sep); r != 0 {
					return r
				}
				a, b = a[1:], b[1:]
			}
		}
		if isDigit(first(a)) || isDigit(first(b)) {
			// An empty numeric segment (a letter or separator here) is
			// older than any number.
			if r := cmpBool(span(a, isDigit) > 0, span(b, isDigit) > 0); r != 0 {
				return r
			}
			a = strings.TrimLeft(a, "0")
			b = strings.TrimLeft(b, "0")
			na, nb := span(a, isDigit), span(b, isDigit)
			// Without leading zeros, more digits is a bigger number.
			if na != nb {
				return cmpInt(na, nb)
			}
			if r := strings.Compare(a[:na], b[:nb]); r != 0 {
				return r
			}
			a, b = a[na:], b[nb:]
		} else {
			na, nb := span(a, isAlpha), span(b, isAlpha)
			n := min(na, nb)
			if r := strings.Compare(a[:n], b[:n]); r != 0 {
				return r
			}
			if na != nb {
				return cmpInt(na, nb)
			}
			a, b = a[na:], b[nb:]
		}
		if len(a) == la && len(b) == lb {
			// Cannot happen (every round consumes a prefix or a segment);
			// guards against looping forever on input the port missed.
			return strings.Compare(a, b)
		}
	}
}

func first(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

func isVersionChar(r rune) bool {
	return r < 0x80 && (isDigit(byte(r)) || isAlpha(byte(r)) || strings.ContainsRune("~-^.", r))
}

func span(s string, ok func(byte) bool) int {
	i := 0
	for i < len(s) && ok(s[i]) {
		i++
	}
	return i
}
