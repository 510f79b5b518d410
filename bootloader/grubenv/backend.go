package grubenv

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"sealift/bootloader"
)

// Name is the backend's identifier recorded on the ESP.
const Name = "grubenv"

// Backend keeps boot flags in the GRUB environment block on the ESP.
type Backend struct {
	fs bootloader.FS
}

var _ bootloader.Backend = (*Backend)(nil)

// New returns the backend for the ESP behind fs.
func New(fsys bootloader.FS) *Backend { return &Backend{fs: fsys} }

// Name implements bootloader.Backend.
func (b *Backend) Name() string { return Name }

// LoadEnv reads and parses the whole environment block.
func (b *Backend) LoadEnv() (*Env, error) {
	data, err := b.fs.ReadFile(EnvPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", EnvPath, err)
	}
	e, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", EnvPath, err)
	}
	return e, nil
}

// Load implements bootloader.Backend. It reads the block afresh every
// time: GRUB rewrites the try counters on every trial boot.
func (b *Backend) Load() (bootloader.Flags, error) {
	e, err := b.LoadEnv()
	if err != nil {
		return nil, err
	}
	f, err := FlagsFromEnv(e)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvPath, err)
	}
	return f, nil
}

// Save implements bootloader.Backend: read-modify-write of the block, so
// variables of other tools survive, then one atomic whole-block write. A
// missing block is created; a damaged one is an error (Install repairs it).
func (b *Backend) Save(f bootloader.Flags) error {
	return b.save(f, false)
}

func (b *Backend) save(f bootloader.Flags, replaceDamaged bool) error {
	e, err := b.LoadEnv()
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		e = NewEnv()
	case replaceDamaged && (errors.Is(err, ErrSize) || errors.Is(err, ErrSignature) || errors.Is(err, ErrMalformed)):
		e = NewEnv()
	default:
		return err
	}
	if err := SetFlags(e, f); err != nil {
		return err
	}
	// A load failure recorded for a slot that is now cleared (being
	// installed again, or its fallback recorded) is history.
	if v, ok := e.Get(LoadFailedVar); ok {
		if s := bootloader.Slot(v); !s.Valid() || f[s].Priority == 0 {
			e.Unset(LoadFailedVar)
			e.Unset(LoadFailedFileVar)
		}
	}
	data, err := e.Encode()
	if err != nil {
		return err
	}
	if err := b.fs.MkdirAll(path.Dir(EnvPath)); err != nil {
		return fmt.Errorf("create %s: %w", path.Dir(EnvPath), err)
	}
	if err := b.fs.WriteFile(EnvPath, data); err != nil {
		return fmt.Errorf("write %s: %w", EnvPath, err)
	}
	return nil
}

// LoadFailure reports the slot whose kernel or initrd GRUB could not load
// at its last attempt, and the file's name (vmlinuz, initrd.img), as the
// generated grub.cfg records them before it reboots. slot is empty when
// no failure is recorded.
func (b *Backend) LoadFailure() (slot bootloader.Slot, file string, err error) {
	e, err := b.LoadEnv()
	if err != nil {
		return "", "", err
	}
	v, _ := e.Get(LoadFailedVar)
	if s := bootloader.Slot(v); s.Valid() {
		file, _ = e.Get(LoadFailedFileVar)
		return s, file, nil
	}
	return "", "", nil
}

// Install writes the initial environment block and then the grub.cfg
// (used by `sealift disk init`). The block goes first because the script
// finds the ESP by it. A damaged block is replaced; a valid one keeps other
// tools' variables.
func Install(fsys bootloader.FS, initial bootloader.Flags) error {
	b := New(fsys)
	if err := b.save(initial, true); err != nil {
		return fmt.Errorf("install grubenv: %w", err)
	}
	if err := fsys.WriteFile(ConfigPath, []byte(GrubConfig(GrubOptions{}))); err != nil {
		return fmt.Errorf("install grubenv: write %s: %w", ConfigPath, err)
	}
	return nil
}

// Simulate implements bootloader.Backend by replaying the generated
// grub.cfg on the environment these flags produce, with the slots' kernels
// as they are on the ESP now (a slot without one is skipped by GRUB).
func (b *Backend) Simulate(f bootloader.Flags) bootloader.Decision {
	return Simulate(f, b.hasKernel)
}

// hasKernel answers the script's `[ -f ($esp)/sealift/X/vmlinuz ]`. When the
// ESP cannot be listed the kernel is assumed present, the common case.
func (b *Backend) hasKernel(s bootloader.Slot) bool {
	names, err := b.fs.ReadDir(bootloader.SlotDir(s))
	if err != nil {
		return true
	}
	for _, n := range names {
		if n == bootloader.KernelName {
			return true
		}
	}
	return false
}

// Simulate is what GRUB running GrubConfig does at the next boot with the
// environment block holding f. hasKernel tells whether a slot's kernel is
// on the ESP; nil means both are.
//
// It agrees with bootloader.SimulateModel on every state the block can
// hold, except when no slot in ORDER is good or has tries left: the model
// boots nothing, GRUB boots the first slot of ORDER with a kernel (else A)
// without spending a try, and the decision's Note says so.
func Simulate(f bootloader.Flags, hasKernel func(bootloader.Slot) bool) bootloader.Decision {
	e := NewEnv()
	if err := SetFlags(e, f); err != nil {
		return bootloader.Decision{After: f.Clone(), Note: fmt.Sprintf("flags cannot be written: %v", err)}
	}
	if hasKernel == nil {
		hasKernel = func(bootloader.Slot) bool { return true }
	}
	r := runScript(e, hasKernel)
	after, err := FlagsFromEnv(r.env)
	if err != nil {
		// Cannot happen: runScript only writes canonical counters.
		return bootloader.Decision{After: f.Clone(), Note: fmt.Sprintf("internal error: %v", err)}
	}
	d := bootloader.Decision{Slot: r.chosen, After: after}
	var notes []string
	for _, s := range r.skipped {
		notes = append(notes, fmt.Sprintf("slot %s skipped: no kernel on the ESP", s))
	}
	switch {
	case r.chosen == "":
		notes = append(notes, "no slot has a kernel on the ESP; GRUB stops at an error")
	case r.fallback:
		notes = append(notes, fmt.Sprintf("no slot is good or has tries left; GRUB boots %s anyway", r.chosen))
	}
	if r.chosen != "" {
		ok, _ := r.env.Get(OKVar(r.chosen))
		d.Trial = ok != "1"
		if d.Trial {
			// Like the model: tries left is only meaningful for a trial.
			d.TriesLeft = after[r.chosen].Tries
		}
	}
	d.Note = strings.Join(notes, "; ")
	return d
}

// scriptResult is the outcome of one run of the grub.cfg.
type scriptResult struct {
	env      *Env // the block after save_env
	chosen   bootloader.Slot
	fallback bool
	skipped  []bootloader.Slot
	saved    bool
}

// runScript executes GrubConfig's logic on a block, statement for
// statement: defaults, whitelisted load_env, the ORDER walk with kernel
// check, OK check and decrement cases, the fallback walk, save_env.
func runScript(in *Env, hasKernel func(bootloader.Slot) bool) scriptResult {
	vars := map[string]string{VarOrder: DefaultOrder}
	for _, s := range bootloader.Slots {
		vars[OKVar(s)] = "0"
		vars[TryVar(s)] = "0"
	}
	for _, name := range scriptVars() {
		if v, ok := in.Get(name); ok {
			vars[name] = v
		}
	}
	var r scriptResult
	kernel := map[bootloader.Slot]bool{}
	for _, s := range bootloader.Slots {
		kernel[s] = hasKernel(s)
	}
	save := false
	for _, tok := range strings.Fields(vars[VarOrder]) {
		s := bootloader.Slot(tok)
		if !s.Valid() {
			continue
		}
		switch next, dec := tryCase(vars[TryVar(s)]); {
		case !kernel[s]:
			r.skipped = append(r.skipped, s)
			if vars[TryVar(s)] != "0" {
				vars[TryVar(s)] = "0"
				save = true
			}
		case vars[OKVar(s)] == "1":
			r.chosen = s
		case dec:
			vars[TryVar(s)] = fmt.Sprint(next)
			r.chosen = s
			save = true
		}
		if r.chosen != "" {
			break
		}
	}
	if r.chosen == "" {
		r.fallback = true
		for _, tok := range strings.Fields(vars[VarOrder]) {
			if s := bootloader.Slot(tok); s.Valid() && kernel[s] {
				r.chosen = s
				break
			}
		}
		if r.chosen == "" {
			r.chosen = bootloader.SlotA
		}
		if !kernel[r.chosen] {
			// linux fails on the missing file: nothing boots.
			r.chosen = ""
		}
	}
	out := &Env{lines: append([]line(nil), in.lines...)}
	if save {
		// save_env A_TRY B_TRY writes the current values of just these two.
		for _, s := range bootloader.Slots {
			// Names are constants and values digits: Set cannot fail.
			_ = out.Set(TryVar(s), vars[TryVar(s)])
		}
		r.saved = true
	}
	r.env = out
	return r
}
