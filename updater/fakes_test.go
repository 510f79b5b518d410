package updater

import (
	"errors"
	"fmt"
	"sync"

	"sealift/bootloader"
	"sealift/internal/aligned"
	"sealift/updater/state"
)

// errInjected is the failure a faults budget produces.
var errInjected = errors.New("injected write failure")

// faults is a budget of side-effecting writes shared by every fake: once it
// is spent, each further write fails. budget < 0 means unlimited.
type faults struct {
	mu     sync.Mutex
	budget int
	used   int
}

func (f *faults) tick(what string) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.budget >= 0 && f.used >= f.budget {
		return fmt.Errorf("%s: %w", what, errInjected)
	}
	f.used++
	return nil
}

// memDevice is a slot in memory.
type memDevice struct {
	mu   sync.Mutex
	data []byte
	f    *faults
}

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, errors.New("read out of bounds")
	}
	return copy(p, m.data[off:]), nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := m.f.tick("slot write"); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, errors.New("write out of bounds")
	}
	return copy(m.data[off:], p), nil
}

func (m *memDevice) Size() int64  { return int64(len(m.data)) }
func (m *memDevice) Sync() error  { return m.f.tick("slot fsync") }
func (m *memDevice) Close() error { return nil }

// directDevice is a memDevice opened for direct I/O: like O_DIRECT, it
// refuses buffers, offsets and lengths not aligned to 4096.
type directDevice struct{ *memDevice }

func (d directDevice) check(p []byte, off int64) error {
	if !aligned.Is(p) || off%aligned.Align != 0 || len(p)%aligned.Align != 0 {
		return fmt.Errorf("direct I/O of %d bytes at %d: not aligned", len(p), off)
	}
	return nil
}

func (d directDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := d.check(p, off); err != nil {
		return 0, err
	}
	return d.memDevice.ReadAt(p, off)
}

func (d directDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := d.check(p, off); err != nil {
		return 0, err
	}
	return d.memDevice.WriteAt(p, off)
}

// memDisk has two in-memory slots and an ESP in a directory. Its slots
// open for direct I/O unless noDirect (a filesystem without O_DIRECT).
type memDisk struct {
	slots    map[bootloader.Slot]*memDevice
	esp      bootloader.FS
	noDirect bool
	directs  int // direct opens
}

func (d *memDisk) OpenSlotDirect(s bootloader.Slot) (SlotDevice, error) {
	if d.noDirect {
		return nil, errors.New("O_DIRECT not supported")
	}
	d.directs++
	return directDevice{d.slots[s]}, nil
}

func newMemDisk(slotSize int, esp bootloader.FS) *memDisk {
	return &memDisk{
		slots: map[bootloader.Slot]*memDevice{
			bootloader.SlotA: {data: make([]byte, slotSize)},
			bootloader.SlotB: {data: make([]byte, slotSize)},
		},
		esp: esp,
	}
}

func (d *memDisk) OpenSlot(s bootloader.Slot) (SlotDevice, error) { return d.slots[s], nil }
func (d *memDisk) SlotPartUUID(s bootloader.Slot) string {
	return map[bootloader.Slot]string{bootloader.SlotA: "aaaaaaaa-0000-4000-8000-000000000002", bootloader.SlotB: "bbbbbbbb-0000-4000-8000-000000000003"}[s]
}
func (d *memDisk) ESP() (bootloader.FS, error) { return d.esp, nil }

// faultyFS fails ESP writes when the budget is spent.
type faultyFS struct {
	bootloader.FS
	f *faults
}

func (x faultyFS) WriteFile(name string, data []byte) error {
	if err := x.f.tick("esp write " + name); err != nil {
		return err
	}
	return x.FS.WriteFile(name, data)
}

func (x faultyFS) Rename(a, b string) error {
	if err := x.f.tick("esp rename " + a); err != nil {
		return err
	}
	return x.FS.Rename(a, b)
}

func (x faultyFS) Remove(name string) error {
	if err := x.f.tick("esp remove " + name); err != nil {
		return err
	}
	return x.FS.Remove(name)
}

// faultyBackend fails flag writes when the budget is spent.
type faultyBackend struct {
	bootloader.Backend
	f *faults
}

func (x faultyBackend) Save(fl bootloader.Flags) error {
	if err := x.f.tick("flags save"); err != nil {
		return err
	}
	return x.Backend.Save(fl)
}

// faultyStore fails state saves when the budget is spent.
type faultyStore struct {
	state.Store
	f *faults
}

func (x faultyStore) Save(s *state.State) error {
	if err := x.f.tick("state save"); err != nil {
		return err
	}
	return x.Store.Save(s)
}

// memBackend keeps flags in memory and follows the model's rule.
type memBackend struct {
	mu    sync.Mutex
	flags bootloader.Flags
}

func newMemBackend() *memBackend {
	return &memBackend{flags: bootloader.Flags{bootloader.SlotA: {}, bootloader.SlotB: {}}}
}

func (m *memBackend) Name() string { return "memory" }
func (m *memBackend) Load() (bootloader.Flags, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flags.Clone(), nil
}
func (m *memBackend) Save(f bootloader.Flags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flags = f.Clone()
	return nil
}
func (m *memBackend) Simulate(f bootloader.Flags) bootloader.Decision {
	return bootloader.SimulateModel(f)
}

// memAttrs is a GPT attribute store in memory, for the gptprio backend.
type memAttrs struct {
	mu    sync.Mutex
	attrs map[bootloader.Slot]uint64
}

func (m *memAttrs) Attributes(s bootloader.Slot) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attrs[s], nil
}

func (m *memAttrs) SetAttributes(a map[bootloader.Slot]uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s, v := range a {
		m.attrs[s] = v
	}
	return nil
}
