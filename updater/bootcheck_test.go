package updater

import (
	"context"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/bootloader/grubenv"
	"sealift/updater/state"
)

func TestBootCheck(t *testing.T) {
	v1, v2 := image(1, 16*4096), image(2, 16*4096)
	cases := []struct {
		name     string
		after    func(t *testing.T, r *rig) // after v2 is staged into B
		result   string
		cause    string
		skipGPT  bool // gptprio's bootloader cannot see a missing kernel
		failedV2 bool
		only     string // run with this backend only
	}{
		{"new slot on trial", func(t *testing.T, r *rig) { mustBoot(t, r.u, bootloader.SlotB, true) }, "trial", "", false, false, ""},
		{"health failed and marked bad", func(t *testing.T, r *rig) {
			mustBoot(t, r.u, bootloader.SlotB, true)
			if _, err := r.u.MarkBad("health check http://127.0.0.1:10248/healthz failed"); err != nil {
				t.Fatal(err)
			}
			mustBoot(t, r.u, bootloader.SlotA, false)
		}, "rolled-back", CauseMarkedBad, false, true, ""},
		{"tries exhausted", func(t *testing.T, r *rig) {
			mustBoot(t, r.u, bootloader.SlotB, true)
			mustBoot(t, r.u, bootloader.SlotB, true)
			mustBoot(t, r.u, bootloader.SlotB, true)
			mustBoot(t, r.u, bootloader.SlotA, false)
		}, "rolled-back", "tries exhausted", false, true, ""},
		{"kernel missing", func(t *testing.T, r *rig) {
			esp, _ := r.disk.ESP()
			if err := esp.Remove("sealift/B/cmdline"); err != nil {
				t.Fatal(err)
			}
			if err := esp.Remove("sealift/B/vmlinuz"); err != nil {
				t.Fatal(err)
			}
			mustBoot(t, r.u, bootloader.SlotA, false)
		}, "rolled-back", CauseNotBootable, true, true, ""},
		{"GRUB could not load the kernel", func(t *testing.T, r *rig) {
			// What the generated grub.cfg does at each try: spend it,
			// fail in linux, record the slot and file, reboot.
			for range bootloader.DefaultTries {
				mustBoot(t, r.u, bootloader.SlotB, true)
				recordLoadFailure(t, r, "B", "vmlinuz")
			}
			mustBoot(t, r.u, bootloader.SlotA, false)
		}, "rolled-back", "not bootable: GRUB could not load the slot's kernel (sealift/B/vmlinuz on the ESP is not a file it can start, or is damaged); each try ended in a reboot until none were left", false, true, "grubenv"},
		{"GRUB could not load the initrd", func(t *testing.T, r *rig) {
			for range bootloader.DefaultTries {
				mustBoot(t, r.u, bootloader.SlotB, true)
			}
			recordLoadFailure(t, r, "B", "initrd.img")
			mustBoot(t, r.u, bootloader.SlotA, false)
		}, "rolled-back", "GRUB could not load the slot's initrd (sealift/B/initrd.img", false, true, "grubenv"},
		{"a load failure of the other slot is not the cause", func(t *testing.T, r *rig) {
			recordLoadFailure(t, r, "A", "vmlinuz")
			for range bootloader.DefaultTries {
				mustBoot(t, r.u, bootloader.SlotB, true)
			}
			mustBoot(t, r.u, bootloader.SlotA, false)
		}, "rolled-back", "tries exhausted", false, true, "grubenv"},
	}
	for _, be := range backends {
		for _, c := range cases {
			if be.name == "memory" || (c.skipGPT && be.name == "gptprio") || (c.only != "" && be.name != c.only) {
				continue
			}
			t.Run(be.name+"/"+c.name, func(t *testing.T) {
				r := newRig(t, be.make)
				mustInstall(t, r.u, v1, "v1")
				mustBoot(t, r.u, bootloader.SlotA, true)
				if _, err := r.u.MarkGood(); err != nil {
					t.Fatal(err)
				}
				if bc, err := r.u.BootCheck(); err != nil || bc.Result != "no-update" {
					t.Fatalf("before: %+v %v", bc, err)
				}
				mustInstall(t, r.u, v2, "v2")
				c.after(t, r)
				bc, err := r.u.BootCheck()
				if err != nil {
					t.Fatal(err)
				}
				if bc.Result != c.result || (c.cause != "" && (bc.Outcome == nil || !strings.Contains(bc.Outcome.Reason, c.cause))) {
					t.Fatalf("boot check: %+v %+v", bc, bc.Outcome)
				}
				st, _ := r.u.Status()
				stt, _ := r.store.Load()
				if gb, ok := r.boot.(*grubenv.Backend); ok && c.failedV2 {
					// Recording the fallback clears B, and with it the record.
					if s, f, err := gb.LoadFailure(); s == bootloader.SlotB || err != nil {
						t.Fatalf("load failure still recorded after boot-check: %q %q %v", s, f, err)
					}
				}
				if c.failedV2 {
					if stt.Failed["v2"] == nil || st.Pending != nil || st.Last.Result != "rolled-back" || st.Slots[1].Flags.Priority != 0 {
						t.Fatalf("after rollback: %+v failed=%v", st, stt.Failed)
					}
					// A second boot-check has nothing left to do.
					if bc, _ := r.u.BootCheck(); bc.Result != "no-update" {
						t.Fatalf("second boot check: %+v", bc)
					}
				} else if st.Pending == nil {
					t.Fatal("trial lost its pending record")
				}
			})
		}
	}
}

// recordLoadFailure writes into the grubenv block what the generated
// grub.cfg saves when GRUB cannot load file of slot.
func recordLoadFailure(t *testing.T, r *rig, slot, file string) {
	t.Helper()
	gb := r.boot.(*grubenv.Backend)
	e, err := gb.LoadEnv()
	if err != nil {
		t.Fatal(err)
	}
	e.Set(grubenv.LoadFailedVar, slot)
	e.Set(grubenv.LoadFailedFileVar, file)
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	esp, _ := r.disk.ESP()
	if err := esp.WriteFile(grubenv.EnvPath, data); err != nil {
		t.Fatal(err)
	}
}

func TestBootCheckInterrupted(t *testing.T) {
	r := newRig(t, backends[1].make)
	mustInstall(t, r.u, image(1, 16*4096), "v1")
	mustBoot(t, r.u, bootloader.SlotA, true)
	r.u.MarkGood()
	r.f.budget = 3
	if _, err := r.faulty().Install(context.Background(), req(image(2, 3*chunkSize), "v2")); err == nil {
		t.Fatal("install did not fail")
	}
	if bc, err := r.u.BootCheck(); err != nil || bc.Result != "interrupted" {
		t.Fatalf("%+v %v", bc, err)
	}
}

func TestStatusAfterMarkBadBeforeReboot(t *testing.T) {
	r := newRig(t, backends[1].make)
	mustInstall(t, r.u, image(1, 16*4096), "v1")
	mustBoot(t, r.u, bootloader.SlotA, true)
	r.u.MarkGood()
	mustInstall(t, r.u, image(2, 16*4096), "v2")
	mustBoot(t, r.u, bootloader.SlotB, true)
	if _, err := r.u.MarkBad(`health check "kubelet" failed`); err != nil {
		t.Fatal(err)
	}
	st, err := r.u.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Notes) != 1 || !strings.Contains(st.Notes[0], `marked bad: health check "kubelet" failed`) || !strings.Contains(st.Notes[0], "falls back to A") {
		t.Fatalf("notes: %q", st.Notes)
	}
}

// fixedRuntime is a booted system running one slot.
type fixedRuntime bootloader.Slot

func (f fixedRuntime) RunningSlot() (bootloader.Slot, error) { return bootloader.Slot(f), nil }

// TestBootCheckNamesAGoodSlotGRUBCouldNotLoad: GRUB demoted slot B, which
// was good (nothing pending), after failing to load its kernel; the boot
// of A records why B is no longer good.
func TestBootCheckNamesAGoodSlotGRUBCouldNotLoad(t *testing.T) {
	r := newRig(t, backends[1].make)
	mustInstall(t, r.u, image(1, 16*4096), "v1")
	mustBoot(t, r.u, bootloader.SlotA, true)
	r.u.MarkGood()
	mustInstall(t, r.u, image(2, 16*4096), "v2")
	mustBoot(t, r.u, bootloader.SlotB, true)
	r.u.MarkGood()
	recordLoadFailure(t, r, "B", "vmlinuz")
	r.u.Runtime = fixedRuntime(bootloader.SlotA)
	if bc, err := r.u.BootCheck(); err != nil || bc.Result != "no-update" {
		t.Fatalf("%+v %v", bc, err)
	}
	evs, _ := r.u.Events(0)
	last := evs[len(evs)-1]
	if last.Kind != state.EventBooted || !strings.Contains(last.Message, "booted v1 from slot A") ||
		!strings.Contains(last.Message, "GRUB could not load the slot's kernel") {
		t.Fatalf("boot event %+v", last)
	}
}
