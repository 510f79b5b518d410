package fleetlock

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"
)

// ErrFull is returned by Store.Lock when the group already has as many
// holders as it has slots.
var ErrFull = errors.New("all reboot slots of the group are held")

// Store keeps the holders of every group's reboot slots. Lock and Unlock
// must each be atomic with respect to all other calls, from this process
// and from any other server sharing the store: two servers in front of
// one etcd must never hand out more slots than a group has.
//
// An error other than ErrFull means the store could not answer; the server
// then refuses the request, it never guesses a grant.
type Store interface {
	// Lock makes id a holder of group, with since as the time it took the
	// slot, unless the group already has slots holders (ErrFull); taken
	// reports that this call took the slot. An id that holds a slot
	// already keeps it and gets its existing record back (the lock is
	// recursive), even when the group is over its slot count because the
	// count was lowered.
	Lock(ctx context.Context, group, id string, slots int, since time.Time) (h Holder, taken bool, err error)
	// Unlock removes id from group's holders and reports whether it was
	// one. Removing an id that holds nothing is not an error.
	Unlock(ctx context.Context, group, id string) (bool, error)
	// Holders returns the holders of every group that has any (or of the
	// one group given), each list ordered by Since, then ID.
	Holders(ctx context.Context, group string) (map[string][]Holder, error)
}

// Memory is a Store in the server's memory, for a single server process.
// Its holders are lost when the process ends: a node that was rebooting
// then no longer counts, and another may take its slot. Use the etcd
// store where a server restart must not do that.
type Memory struct {
	mu     sync.Mutex
	groups map[string]map[string]time.Time
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{groups: map[string]map[string]time.Time{}} }

// Lock implements Store.
func (m *Memory) Lock(ctx context.Context, group, id string, slots int, since time.Time) (Holder, bool, error) {
	if err := ctx.Err(); err != nil {
		return Holder{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	hs := m.groups[group]
	if t, ok := hs[id]; ok {
		return Holder{ID: id, Since: t}, false, nil
	}
	if len(hs) >= slots {
		return Holder{}, false, ErrFull
	}
	if hs == nil {
		hs = map[string]time.Time{}
		m.groups[group] = hs
	}
	hs[id] = since
	return Holder{ID: id, Since: since}, true, nil
}

// Unlock implements Store.
func (m *Memory) Unlock(ctx context.Context, group, id string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	hs := m.groups[group]
	if _, ok := hs[id]; !ok {
		return false, nil
	}
	delete(hs, id)
	if len(hs) == 0 {
		delete(m.groups, group)
	}
	return true, nil
}

// Holders implements Store.
func (m *Memory) Holders(ctx context.Context, group string) (map[string][]Holder, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]Holder{}
	for g, hs := range m.groups {
		if group != "" && g != group {
			continue
		}
		list := make([]Holder, 0, len(hs))
		for id, t := range hs {
			list = append(list, Holder{ID: id, Since: t})
		}
		sortHolders(list)
		out[g] = list
	}
	return out, nil
}

func sortHolders(hs []Holder) {
	sort.Slice(hs, func(i, j int) bool {
		if !hs[i].Since.Equal(hs[j].Since) {
			return hs[i].Since.Before(hs[j].Since)
		}
		return hs[i].ID < hs[j].ID
	})
}
