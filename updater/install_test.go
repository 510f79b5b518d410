package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/bootloader/gptprio"
	"sealift/bootloader/grubenv"
	"sealift/bootloader/sdboot"
	"sealift/internal/kernelimage"
	"sealift/updater/state"
)

const testSlotSize = 16 << 20

// backends lists the flag stores the updater is tested with; each builds a
// fresh backend on the given ESP.
var backends = []struct {
	name string
	make func(esp bootloader.FS) (bootloader.Backend, error)
}{
	{"memory", func(bootloader.FS) (bootloader.Backend, error) { return newMemBackend(), nil }},
	{"grubenv", func(esp bootloader.FS) (bootloader.Backend, error) {
		return grubenv.New(esp), grubenv.Install(esp, bootloader.Flags{bootloader.SlotA: {}, bootloader.SlotB: {}})
	}},
	{"sdboot", func(esp bootloader.FS) (bootloader.Backend, error) {
		return sdboot.New(esp), sdboot.Install(esp, bootloader.Flags{bootloader.SlotA: {}, bootloader.SlotB: {}})
	}},
	{"gptprio", func(bootloader.FS) (bootloader.Backend, error) {
		return gptprio.New(&memAttrs{attrs: map[bootloader.Slot]uint64{}}), nil
	}},
}

type rig struct {
	u     *Updater
	disk  *memDisk
	boot  bootloader.Backend
	store state.Store
	f     *faults
}

func newRig(t *testing.T, mk func(bootloader.FS) (bootloader.Backend, error)) *rig {
	t.Helper()
	esp := bootloader.DirFS(t.TempDir())
	b, err := mk(esp)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{disk: newMemDisk(testSlotSize, esp), boot: b, store: state.Dir(t.TempDir()), f: &faults{budget: -1}}
	r.u = &Updater{Disk: r.disk, Boot: b, State: r.store}
	return r
}

// faulty returns an updater on the same disk whose every write draws on r.f.
func (r *rig) faulty() *Updater {
	esp, _ := r.disk.ESP()
	d := &memDisk{slots: r.disk.slots, esp: faultyFS{esp, r.f}}
	for _, s := range d.slots {
		s.f = r.f
	}
	return &Updater{Disk: d, Boot: faultyBackend{r.boot, r.f}, State: faultyStore{r.store, r.f}}
}

func image(seed int64, size int) []byte {
	b := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func req(img []byte, version string) InstallRequest {
	return InstallRequest{
		Image: bytes.NewReader(img), ImageSize: int64(len(img)), Version: version,
		Boot: bootloader.BootFiles{Kernel: kernelimage.Synthetic([]byte("kernel-" + version)), Initrd: []byte("initrd"), Cmdline: "console=ttyS0"},
	}
}

func mustInstall(t *testing.T, u *Updater, img []byte, version string) *InstallResult {
	t.Helper()
	res, err := u.Install(context.Background(), req(img, version))
	if err != nil {
		t.Fatalf("install %s: %v", version, err)
	}
	return res
}

func mustBoot(t *testing.T, u *Updater, want bootloader.Slot, trial bool) {
	t.Helper()
	d, err := u.SimulateBoot(true)
	if err != nil {
		t.Fatalf("simulate boot: %v", err)
	}
	if d.Slot != want || d.Trial != trial {
		t.Fatalf("boot chose %s trial=%v, want %s trial=%v", d.Slot, d.Trial, want, trial)
	}
}

func TestLifecycle(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			r := newRig(t, be.make)
			u := r.u
			v1 := image(1, 3*4096*129)
			res := mustInstall(t, u, v1, "v1")
			if res.Slot != bootloader.SlotA {
				t.Fatalf("first install went to %s, want A", res.Slot)
			}
			mustBoot(t, u, bootloader.SlotA, true)
			if _, err := u.MarkGood(); err != nil {
				t.Fatal(err)
			}
			v2 := image(2, 5*1<<20)
			if res := mustInstall(t, u, v2, "v2"); res.Slot != bootloader.SlotB || res.Next.Slot != bootloader.SlotB || !res.Next.Trial {
				t.Fatalf("install v2: %+v", res)
			}
			st, err := u.Status()
			if err != nil {
				t.Fatal(err)
			}
			if st.Pending == nil || st.Pending.Phase != state.PhaseTrial || st.Slots[1].Record.Version != "v2" {
				t.Fatalf("status after install: %+v", st)
			}
			mustBoot(t, u, bootloader.SlotB, true)
			if _, err := u.MarkGood(); err != nil {
				t.Fatal(err)
			}
			mustBoot(t, u, bootloader.SlotB, false)
			if rb, err := u.Rollback(Actor{}); err != nil || rb.To != bootloader.SlotA {
				t.Fatalf("rollback: %+v %v", rb, err)
			}
			mustBoot(t, u, bootloader.SlotA, false)
			if !bytes.Equal(r.disk.slots[bootloader.SlotA].data[:len(v1)], v1) {
				t.Fatal("slot A content changed")
			}
			e, err := bootloader.ReadBootEntry(r.disk.esp, bootloader.SlotB)
			if err != nil || e.Version != "v2" || !strings.Contains(e.Cmdline, CmdlineRootHash+"=") {
				t.Fatalf("boot entry of B: %+v %v", e, err)
			}
		})
	}
}

// TestInstallSurvivesFailureAtEveryWrite fails the install at every write
// it makes, in turn: the next boot must still be the old, verified slot,
// whose bytes are untouched, and a clean retry must then succeed.
func TestInstallSurvivesFailureAtEveryWrite(t *testing.T) {
	v1 := image(1, 1<<20)
	v2 := image(2, 3*chunkSize+8*4096) // several pipeline chunks
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			setup := func() *rig {
				r := newRig(t, be.make)
				mustInstall(t, r.u, v1, "v1")
				mustBoot(t, r.u, bootloader.SlotA, true)
				if _, err := r.u.MarkGood(); err != nil {
					t.Fatal(err)
				}
				return r
			}
			// Count the writes of a clean install.
			r := setup()
			if _, err := r.faulty().Install(context.Background(), req(v2, "v2")); err != nil {
				t.Fatal(err)
			}
			total := r.f.used
			if total < 10 {
				t.Fatalf("only %d writes counted; the fakes are not wired", total)
			}
			for n := 0; n < total; n++ {
				r := setup()
				r.f.budget = n
				_, err := r.faulty().Install(context.Background(), req(v2, "v2"))
				if !errors.Is(err, errInjected) {
					t.Fatalf("budget %d/%d: install did not fail with the injected error: %v", n, total, err)
				}
				flags, lerr := r.boot.Load()
				if lerr != nil {
					t.Fatal(lerr)
				}
				d := r.boot.Simulate(flags)
				if n == total-1 {
					// Only the phase label after the flip failed: the flip
					// stands, and status derives the phase from the flags.
					st, _ := r.u.Status()
					if d.Slot != bootloader.SlotB || !d.Trial || st.Pending.Phase != state.PhaseTrial {
						t.Fatalf("failure after the flip: next boot %v, pending %+v", d, st.Pending)
					}
					continue
				}
				if d.Slot != bootloader.SlotA || d.Trial {
					t.Fatalf("budget %d/%d (%v): next boot %s trial=%v, want good slot A", n, total, err, d.Slot, d.Trial)
				}
				if !bytes.Equal(r.disk.slots[bootloader.SlotA].data[:len(v1)], v1) {
					t.Fatalf("budget %d: slot A was written", n)
				}
				// Status explains the interrupted update, unless the failing
				// write was the very first (nothing changed) or the state
				// write that would have recorded it.
				st, _ := r.u.Status()
				if st.Pending == nil && n > 0 && !strings.Contains(err.Error(), "state save") {
					t.Fatalf("budget %d: interrupted install left no pending record", n)
				}
				// A clean retry works from any interrupted state.
				r.f.budget = -1
				res, err := r.u.Install(context.Background(), req(v2, "v2"))
				if err != nil || res.Next.Slot != bootloader.SlotB {
					t.Fatalf("budget %d: retry: %v %+v", n, err, res)
				}
			}
		})
	}
}

func TestInstallBadInputChangesNothing(t *testing.T) {
	good := image(3, 64*4096)
	cases := []struct {
		name string
		mod  func(*InstallRequest)
		want string
	}{
		{"larger than slot", func(r *InstallRequest) {
			big := make([]byte, testSlotSize)
			r.Image, r.ImageSize = bytes.NewReader(big), int64(len(big))
		}, "the slot holds"},
		{"not multiple of 4096", func(r *InstallRequest) { r.Image, r.ImageSize = bytes.NewReader(good[:5000]), 5000 }, "not a multiple of 4096"},
		{"empty kernel", func(r *InstallRequest) { r.Boot.Kernel = nil }, "kernel is empty"},
		{"not a kernel", func(r *InstallRequest) { r.Boot.Kernel = []byte("kernel") }, `the kernel of v2: not a kernel image: 6 bytes starting with 6b 65 72 6e 65 6c; want an x86 bzImage`},
		{"kernel named", func(r *InstallRequest) { r.Boot.Kernel, r.KernelName = make([]byte, 4096), "/boot/vmlinuz" }, "/boot/vmlinuz: not a kernel image"},
		{"kernel truncated", func(r *InstallRequest) { k := kernelimage.Synthetic(make([]byte, 4096)); r.Boot.Kernel = k[:2048] }, "truncated"},
		{"bad version", func(r *InstallRequest) { r.Version = "v 2" }, "version"},
		{"tries out of range", func(r *InstallRequest) { r.Tries = 16 }, "tries"},
		{"multi-line cmdline", func(r *InstallRequest) { r.Boot.Cmdline = "a\nb" }, "one line"},
		{"reserved cmdline parameter", func(r *InstallRequest) { r.Boot.Cmdline = "console=ttyS0 sealift.slot=A" }, `parameter "sealift.slot=A": sealift.* parameters are reserved`},
	}
	for _, be := range backends {
		for _, c := range cases {
			t.Run(be.name+"/"+c.name, func(t *testing.T) {
				r := newRig(t, be.make)
				mustInstall(t, r.u, good, "v1")
				before, _ := r.boot.Load()
				stBefore, _ := r.store.Load()
				rq := req(good, "v2")
				c.mod(&rq)
				_, err := r.u.Install(context.Background(), rq)
				if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v, want ErrBadInput mentioning %q", err, c.want)
				}
				after, _ := r.boot.Load()
				if before[bootloader.SlotB] != after[bootloader.SlotB] || before[bootloader.SlotA] != after[bootloader.SlotA] {
					t.Fatalf("flags changed: %v -> %v", before, after)
				}
				stAfter, _ := r.store.Load()
				if (stBefore.Pending == nil) != (stAfter.Pending == nil) || stAfter.Pending.Version != "v1" {
					t.Fatalf("state changed: %+v", stAfter.Pending)
				}
				for _, b := range r.disk.slots[bootloader.SlotB].data[:4096] {
					if b != 0 {
						t.Fatal("slot B was written")
					}
				}
			})
		}
	}
}

func TestInstallStreamLengthMismatch(t *testing.T) {
	img := image(4, 32*4096)
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"short", img[:len(img)-4096], "ended after"},
		{"long", append(append([]byte{}, img...), 1), "longer than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, backends[0].make)
			rq := req(img, "v1")
			rq.Image = bytes.NewReader(c.data)
			_, err := r.u.Install(context.Background(), rq)
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v", err)
			}
			flags, _ := r.boot.Load()
			if d := r.boot.Simulate(flags); d.Slot != "" {
				t.Fatalf("a torn slot became bootable: %v", d)
			}
		})
	}
}

func TestInstallExpectedRootMismatch(t *testing.T) {
	r := newRig(t, backends[0].make)
	img := image(5, 16*4096)
	mustInstall(t, r.u, img, "v1")
	mustBoot(t, r.u, bootloader.SlotA, true)
	if _, err := r.u.MarkGood(); err != nil {
		t.Fatal(err)
	}
	rq := req(img, "v2")
	rq.ExpectedRoot = bytes.Repeat([]byte{7}, 32)
	_, err := r.u.Install(context.Background(), rq)
	if !errors.Is(err, ErrVerify) {
		t.Fatalf("got %v, want ErrVerify", err)
	}
	flags, _ := r.boot.Load()
	if d := r.boot.Simulate(flags); d.Slot != bootloader.SlotA || d.Trial {
		t.Fatalf("next boot %v, want A", d)
	}
}

func TestCancelAndInterrupted(t *testing.T) {
	r := newRig(t, backends[0].make)
	img := image(6, 16*4096)
	mustInstall(t, r.u, img, "v1")
	mustBoot(t, r.u, bootloader.SlotA, true)
	if _, err := r.u.MarkGood(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.u.Cancel(Actor{}); !errors.Is(err, ErrNoPending) {
		t.Fatalf("cancel with nothing pending: %v", err)
	}
	mustInstall(t, r.u, img, "v2")
	p, err := r.u.Cancel(Actor{})
	if err != nil || p.Version != "v2" {
		t.Fatalf("cancel: %v %+v", err, p)
	}
	mustBoot(t, r.u, bootloader.SlotA, false)
	st, _ := r.u.Status()
	if st.Pending != nil || st.Last.Result != "cancelled" || st.Slots[1].Record != nil {
		t.Fatalf("status after cancel: %+v", st)
	}
}

func TestInstallImageDigest(t *testing.T) {
	img := image(7, 16*4096)
	sum := sha256.Sum256(img)
	good := "sha256:" + hex.EncodeToString(sum[:])
	cases := []struct {
		name   string
		digest string
		want   error
	}{
		{"matching digest is recorded", good, nil},
		{"wrong digest refused before the flip", "sha256:" + strings.Repeat("0", 64), ErrVerify},
		{"malformed digest is bad input", "md5:abc", ErrBadInput},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, backends[0].make)
			rq := req(img, "v1")
			rq.ImageDigest = c.digest
			res, err := r.u.Install(context.Background(), rq)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == nil && res.Record.ImageDigest != good {
				t.Fatalf("recorded %q", res.Record.ImageDigest)
			}
			if c.want != nil {
				flags, _ := r.boot.Load()
				if d := r.boot.Simulate(flags); d.Slot != "" {
					t.Fatalf("slot became bootable: %v", d)
				}
			}
		})
	}
}

// TestInstallKeepsTheOnlyGoodSlot: while the running slot is still on
// trial, a new install would have to overwrite the only slot that booted
// successfully; it is refused and nothing changes.
func TestInstallKeepsTheOnlyGoodSlot(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			r := newRig(t, be.make)
			v1 := image(1, 16*4096)
			mustInstall(t, r.u, v1, "v1")
			mustBoot(t, r.u, bootloader.SlotA, true)
			if _, err := r.u.MarkGood(); err != nil {
				t.Fatal(err)
			}
			mustInstall(t, r.u, image(2, 16*4096), "v2")
			mustBoot(t, r.u, bootloader.SlotB, true) // running B, not yet good
			before, _ := r.boot.Load()
			_, err := r.u.Install(context.Background(), req(image(3, 16*4096), "v3"))
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "only release that booted successfully") {
				t.Fatalf("got %v", err)
			}
			after, _ := r.boot.Load()
			if before[bootloader.SlotA] != after[bootloader.SlotA] || before[bootloader.SlotB] != after[bootloader.SlotB] {
				t.Fatalf("flags changed: %v -> %v", before, after)
			}
			if !bytes.Equal(r.disk.slots[bootloader.SlotA].data[:len(v1)], v1) {
				t.Fatal("slot A was written")
			}
		})
	}
}
