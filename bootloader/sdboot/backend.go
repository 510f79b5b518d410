package sdboot

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"sealift/bootloader"
)

// Name is the backend's identifier recorded on the ESP.
const Name = "sdboot"

// Backend keeps boot flags in systemd-boot entry file names on the ESP.
type Backend struct {
	fs bootloader.FS
}

var _ bootloader.Backend = (*Backend)(nil)

// New returns the backend for the ESP behind fs.
func New(fsys bootloader.FS) *Backend { return &Backend{fs: fsys} }

// Name implements bootloader.Backend.
func (b *Backend) Name() string { return Name }

// state is what loader/entries holds for sealift.
type state struct {
	// cur is each slot's entry systemd-boot would prefer; nil for none.
	cur map[bootloader.Slot]*EntryName
	// extras are further entries of a slot (left by hand or by a tool);
	// Save removes them.
	extras []EntryName
	// maxGen is the highest generation in use.
	maxGen int
}

func (b *Backend) read() (state, error) {
	names, err := b.fs.ReadDir(EntriesDir)
	if err != nil {
		return state{}, fmt.Errorf("list %s: %w", EntriesDir, err)
	}
	st := state{cur: map[bootloader.Slot]*EntryName{}}
	per := map[bootloader.Slot][]EntryName{}
	for _, name := range names {
		if strings.HasPrefix(name, ".") || !IsEntryFile(name) {
			// Hidden files (DirFS temp files) are skipped by systemd-boot
			// too; other entries are not sealift's.
			continue
		}
		n, err := ParseEntryName(name)
		if err != nil {
			// systemd-boot would still boot it: refuse to guess.
			return state{}, fmt.Errorf("%s: %w", EntriesDir, err)
		}
		per[n.Slot] = append(per[n.Slot], n)
		st.maxGen = max(st.maxGen, n.Gen)
	}
	for _, s := range bootloader.Slots {
		list := per[s]
		if len(list) == 0 {
			continue
		}
		sort.SliceStable(list, func(i, j int) bool { return sdCompare(sdOf(list[i]), sdOf(list[j])) < 0 })
		best := list[0]
		st.cur[s] = &best
		st.extras = append(st.extras, list[1:]...)
	}
	return st, nil
}

func sdOf(n EntryName) sdEntry { return parseSDEntry(n.String()) }

// flagsOf maps entries to flags: priority 2 for the entry whose id sorts
// higher (the higher generation), 1 for the other, 0 without an entry.
func flagsOf(cur map[bootloader.Slot]*EntryName) bootloader.Flags {
	f := bootloader.Flags{}
	var present []EntryName
	for _, s := range bootloader.Slots {
		f[s] = bootloader.SlotFlags{}
		if n := cur[s]; n != nil {
			present = append(present, *n)
		}
	}
	// Rank by id alone: badness is expressed by tries, not by priority.
	sort.SliceStable(present, func(i, j int) bool { return vercmp(sdOf(present[i]).id, sdOf(present[j]).id) > 0 })
	for i, n := range present {
		v := n.flags()
		v.Priority = 2 - i
		f[n.Slot] = v
	}
	return f
}

// Load implements bootloader.Backend, reading loader/entries afresh:
// systemd-boot renames entries on every trial boot.
func (b *Backend) Load() (bootloader.Flags, error) {
	st, err := b.read()
	if err != nil {
		return nil, err
	}
	f := flagsOf(st.cur)
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", EntriesDir, err)
	}
	return f, nil
}

// desired computes the entry names for flags given what is on the ESP.
//
// A successful slot gets no counter. A slot on trial gets "+TRIES", or
// keeps its name if it already has exactly that many tries left (so the
// DONE count systemd-boot wrote survives). A slot with priority but
// neither success nor tries is written as "+0-DONE" (DONE from its current
// counter, else 0): systemd-boot sorts it last but would still boot it if
// nothing else is left, which matches the model's "not bootable" as closely
// as an entry can. Priority 0 has no entry.
//
// Generations: the slot preferred by the flags (higher priority, A on a
// tie) must have the higher generation. Existing generations are kept when
// they already order the slots right; otherwise the preferred slot is
// raised to one above every generation in use, so the rename that makes it
// overtake is a single atomic step.
func desired(f bootloader.Flags, st state) map[bootloader.Slot]*EntryName {
	want := map[bootloader.Slot]*EntryName{}
	for _, s := range bootloader.Slots {
		v := f[s]
		if v.Priority == 0 {
			continue
		}
		cur := st.cur[s]
		n := EntryName{Slot: s}
		switch {
		case v.Successful:
		case cur != nil && cur.Counted && cur.Left == v.Tries:
			n.Counted, n.Left, n.Done, n.HasDone = true, cur.Left, cur.Done, cur.HasDone
		case v.Tries > 0:
			n.Counted, n.Left = true, v.Tries
		default:
			n.Counted, n.HasDone = true, true
			if cur != nil && cur.Counted {
				n.Done = cur.Done
			}
		}
		want[s] = &n
	}
	order := f.Order()
	switch len(order) {
	case 1:
		s := order[0]
		if cur := st.cur[s]; cur != nil {
			want[s].Gen = cur.Gen
		} else {
			want[s].Gen = st.maxGen + 1
		}
	case 2:
		hi, lo := order[0], order[1]
		if cur := st.cur[lo]; cur != nil {
			want[lo].Gen = cur.Gen
		} else {
			want[lo].Gen = st.maxGen + 1
		}
		if cur := st.cur[hi]; cur != nil && cur.Gen > want[lo].Gen {
			want[hi].Gen = cur.Gen
		} else {
			want[hi].Gen = max(st.maxGen, want[lo].Gen) + 1
		}
	}
	return want
}

// pick is systemd-boot's choice among entries: the first in its order.
func pick(names []EntryName) (EntryName, bool) {
	if len(names) == 0 {
		return EntryName{}, false
	}
	best := names[0]
	for _, n := range names[1:] {
		if sdCompare(sdOf(n), sdOf(best)) < 0 {
			best = n
		}
	}
	return best, true
}

// opKind is one file operation of a Save.
type opKind int

const (
	opCreate opKind = iota
	opRename
	opRemove
)

type op struct {
	kind     opKind
	from, to string // entry file names; from for rename/remove, to for create/rename
	content  []byte
}

func (o op) String() string {
	switch o.kind {
	case opCreate:
		return "create " + o.to
	case opRename:
		return "rename " + o.from + " -> " + o.to
	default:
		return "remove " + o.from
	}
}

// plan lists the file operations that turn the ESP's entries into flags f.
//
// Order matters because power can fail between any two operations. The
// slot systemd-boot will boot once all is done (the target) is handled
// first: created, raised or renamed into its final name, which is bootable
// by itself. Only then is the other slot lowered, renamed or removed, and
// stray extra entries last. So at every step either the old state stands
// (the previously preferred slot untouched) or the target's final entry is
// in place and, being above the other slot's entry, is what boots.
func (b *Backend) plan(f bootloader.Flags) ([]op, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	st, err := b.read()
	if err != nil {
		return nil, err
	}
	want := desired(f, st)
	var final []EntryName
	for _, s := range bootloader.Slots {
		if want[s] != nil {
			final = append(final, *want[s])
		}
	}
	slots := []bootloader.Slot{bootloader.SlotA, bootloader.SlotB}
	if t, ok := pick(final); ok && t.Slot == bootloader.SlotB {
		slots = []bootloader.Slot{bootloader.SlotB, bootloader.SlotA}
	}
	var ops []op
	for _, s := range slots {
		cur, w := st.cur[s], want[s]
		switch {
		case w == nil && cur != nil:
			ops = append(ops, op{kind: opRemove, from: cur.String()})
		case w != nil && cur == nil:
			content, err := entryContent(b.fs, s)
			if err != nil {
				return nil, err
			}
			ops = append(ops, op{kind: opCreate, to: w.String(), content: content})
		case w != nil && *w != *cur:
			ops = append(ops, op{kind: opRename, from: cur.String(), to: w.String()})
		}
	}
	for _, x := range st.extras {
		if !slices.Contains(final, x) {
			ops = append(ops, op{kind: opRemove, from: x.String()})
		}
	}
	return ops, nil
}

// entryContent renders a slot's entry from its boot files on the ESP.
func entryContent(fsys bootloader.FS, s bootloader.Slot) ([]byte, error) {
	be, err := bootloader.ReadBootEntry(fsys, s)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("slot %s has no boot files on the ESP, cannot create its entry: %w", s, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read boot files of slot %s: %w", s, err)
	}
	c, err := RenderEntry(be)
	if err != nil {
		return nil, err
	}
	return []byte(c), nil
}

// Save implements bootloader.Backend: it creates, renames and removes
// entries in the order plan explains. Every operation is durable (FS
// contract) before the next starts. Saving the flags Load returned is a
// no-op.
func (b *Backend) Save(f bootloader.Flags) error {
	ops, err := b.plan(f)
	if err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	if err := b.fs.MkdirAll(EntriesDir); err != nil {
		return fmt.Errorf("create %s: %w", EntriesDir, err)
	}
	for _, o := range ops {
		var err error
		switch o.kind {
		case opCreate:
			err = b.fs.WriteFile(path.Join(EntriesDir, o.to), o.content)
		case opRename:
			err = b.fs.Rename(path.Join(EntriesDir, o.from), path.Join(EntriesDir, o.to))
		case opRemove:
			err = b.fs.Remove(path.Join(EntriesDir, o.from))
		}
		if err != nil {
			return fmt.Errorf("%s in %s: %w", o, EntriesDir, err)
		}
	}
	return nil
}

// Bless records that slot s booted and is healthy: MarkGood, which renames
// its entry to the counter-less name (what systemd-bless-boot does), and
// raises it above the other slot if needed.
func (b *Backend) Bless(s bootloader.Slot) error {
	_, err := bootloader.Apply(b, bootloader.MarkGood(s))
	return err
}

// Install writes loader/loader.conf and the entries for the initial flags
// (used by `sealift disk init`). A slot without boot files on the ESP gets
// no entry, whatever its flags say.
func Install(fsys bootloader.FS, initial bootloader.Flags) error {
	if err := fsys.MkdirAll(EntriesDir); err != nil {
		return fmt.Errorf("install sdboot: create %s: %w", EntriesDir, err)
	}
	if err := fsys.WriteFile(LoaderConf, []byte(LoaderConfig)); err != nil {
		return fmt.Errorf("install sdboot: write %s: %w", LoaderConf, err)
	}
	f := initial.Clone()
	for _, s := range bootloader.Slots {
		_, err := bootloader.ReadBootEntry(fsys, s)
		if errors.Is(err, fs.ErrNotExist) {
			f[s] = bootloader.SlotFlags{}
		} else if err != nil {
			return fmt.Errorf("install sdboot: read boot files of slot %s: %w", s, err)
		}
	}
	if err := New(fsys).Save(f); err != nil {
		return fmt.Errorf("install sdboot: %w", err)
	}
	return nil
}

// Simulate implements bootloader.Backend: what systemd-boot does at the
// next boot with the entries these flags produce, given which slots'
// kernels are on the ESP now (systemd-boot drops an entry whose linux file
// is missing).
func (b *Backend) Simulate(f bootloader.Flags) bootloader.Decision {
	return Simulate(f, b.hasKernel)
}

func (b *Backend) hasKernel(s bootloader.Slot) bool {
	names, err := b.fs.ReadDir(bootloader.SlotDir(s))
	if err != nil {
		return true // cannot tell; the common case
	}
	return slices.Contains(names, bootloader.KernelName)
}

// Simulate is what systemd-boot 252 does at the next boot with the entries
// Save writes for f on an empty ESP. hasKernel tells whether a slot's
// kernel is on the ESP; nil means both are.
//
// It agrees with bootloader.SimulateModel on every state entries can hold,
// except when every entry is bad (+0-N) or the only entry is: the model
// boots nothing, systemd-boot boots the highest bad entry anyway (and
// counts it: +0-N becomes +0-(N+1)), and the decision's Note says so.
func Simulate(f bootloader.Flags, hasKernel func(bootloader.Slot) bool) bootloader.Decision {
	if err := f.Validate(); err != nil {
		return bootloader.Decision{After: f.Clone(), Note: fmt.Sprintf("flags cannot be written: %v", err)}
	}
	if hasKernel == nil {
		hasKernel = func(bootloader.Slot) bool { return true }
	}
	want := desired(f, state{cur: map[bootloader.Slot]*EntryName{}})
	var visible []EntryName
	var notes []string
	for _, s := range bootloader.Slots {
		if want[s] == nil {
			continue
		}
		if hasKernel(s) {
			visible = append(visible, *want[s])
		} else {
			notes = append(notes, fmt.Sprintf("slot %s's entry is ignored: no kernel on the ESP", s))
		}
	}
	chosen, ok := pick(visible)
	if !ok {
		return bootloader.Decision{After: flagsOf(want), Note: strings.Join(notes, "; ")}
	}
	booted := chosen.Booted()
	want[chosen.Slot] = &booted
	d := bootloader.Decision{Slot: chosen.Slot, After: flagsOf(want)}
	if chosen.Counted {
		d.Trial = true
		d.TriesLeft = booted.Left
	}
	if chosen.Bad() {
		notes = append(notes, fmt.Sprintf("every entry has no tries left; systemd-boot boots %s anyway", chosen.Slot))
	}
	d.Note = strings.Join(notes, "; ")
	return d
}
