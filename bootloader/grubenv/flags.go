package grubenv

import (
	"fmt"
	"strconv"
	"strings"

	"sealift/bootloader"
)

// Variables sealift owns in the block (RAUC's names). Everything else in
// the block belongs to other tools and is kept as it is.
const (
	VarOrder = "ORDER"
	// DefaultOrder is what the generated grub.cfg assumes when ORDER is
	// missing (a block created by hand with grub-editenv): try A, then B.
	DefaultOrder = "A B"
)

// OKVar is the name of a slot's successful flag: "A_OK".
func OKVar(s bootloader.Slot) string { return string(s) + "_OK" }

// TryVar is the name of a slot's try counter: "A_TRY".
func TryVar(s bootloader.Slot) string { return string(s) + "_TRY" }

// scriptVars are the only variables grub.cfg loads (load_env whitelist).
func scriptVars() []string {
	return []string{VarOrder, OKVar(bootloader.SlotA), TryVar(bootloader.SlotA), OKVar(bootloader.SlotB), TryVar(bootloader.SlotB)}
}

// Order lists the slots with priority > 0, highest first: the ORDER
// variable.
func Order(f bootloader.Flags) []bootloader.Slot { return f.Order() }

// SetFlags writes flags into the environment. Only the relative order of
// priorities survives: ORDER holds positions, not numbers.
func SetFlags(e *Env, f bootloader.Flags) error {
	if err := f.Validate(); err != nil {
		return err
	}
	var order []string
	for _, s := range Order(f) {
		order = append(order, string(s))
	}
	if err := e.Set(VarOrder, strings.Join(order, " ")); err != nil {
		return err
	}
	for _, s := range bootloader.Slots {
		ok := "0"
		if f[s].Successful {
			ok = "1"
		}
		if err := e.Set(OKVar(s), ok); err != nil {
			return err
		}
		if err := e.Set(TryVar(s), strconv.Itoa(f[s].Tries)); err != nil {
			return err
		}
	}
	return nil
}

// FlagsFromEnv reads flags back: priority 2 for the first slot of ORDER, 1
// for the second, 0 when absent. Values the grub.cfg would read differently
// from what they look like ("03", "yes", an unknown slot in ORDER) are
// errors, so Load never reports a state GRUB does not see.
func FlagsFromEnv(e *Env) (bootloader.Flags, error) {
	order, ok := e.Get(VarOrder)
	if !ok {
		order = DefaultOrder
	}
	f := bootloader.Flags{}
	prio := 2
	for _, tok := range strings.Fields(order) {
		s := bootloader.Slot(tok)
		if !s.Valid() {
			return nil, fmt.Errorf("grubenv: %s=%q: unknown slot %q", VarOrder, order, tok)
		}
		if f[s].Priority > 0 {
			return nil, fmt.Errorf("grubenv: %s=%q: slot %s listed twice", VarOrder, order, s)
		}
		f[s] = bootloader.SlotFlags{Priority: prio}
		prio--
	}
	for _, s := range bootloader.Slots {
		v := f[s]
		okv, _ := e.Get(OKVar(s))
		switch okv {
		case "", "0":
		case "1":
			v.Successful = true
		default:
			return nil, fmt.Errorf("grubenv: %s=%q: want 0 or 1", OKVar(s), okv)
		}
		tv, present := e.Get(TryVar(s))
		if present {
			n, err := strconv.Atoi(tv)
			if err != nil || strconv.Itoa(n) != tv || n < 0 || n > bootloader.MaxTries {
				return nil, fmt.Errorf("grubenv: %s=%q: want 0-%d", TryVar(s), tv, bootloader.MaxTries)
			}
			v.Tries = n
		}
		f[s] = v
	}
	return f, nil
}
