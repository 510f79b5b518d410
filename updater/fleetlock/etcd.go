package fleetlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultEtcdPrefix is where the etcd store keeps its keys: one key per
// group, <prefix>groups/<group>, whose value lists the group's holders.
const DefaultEtcdPrefix = "sealift/fleetlock/v1/"

// EtcdConfig configures NewEtcd.
type EtcdConfig struct {
	// Endpoints are etcd client URLs, e.g. http://127.0.0.1:2379.
	Endpoints []string
	// Prefix is prepended to every key; DefaultEtcdPrefix when empty.
	Prefix string
}

// Etcd is a Store in etcd, so that several servers (and restarts) share
// one view of the holders. A group's holders are one JSON document under
// one key; Lock and Unlock read it and write it back in a transaction
// that only succeeds if the key's mod revision is still the one read
// (compare-and-swap), and retry from the read when another writer came
// first. Reads are linearizable (etcd's default), so a server never
// decides on a stale copy, and every call is bounded by its context: a
// lost etcd makes calls fail, never succeed.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	owned  bool
}

// NewEtcd connects to etcd. It does not wait for etcd to answer: a server
// may start before its etcd does, and answers errors until it is there.
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints,
		// The library stays quiet; errors reach the caller instead.
		Logger: zap.NewNop(),
		// Notice a dead connection between requests too.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	e := NewEtcdFromClient(cli, cfg.Prefix)
	e.owned = true
	return e, nil
}

// NewEtcdFromClient uses an existing client (e.g. with TLS or
// authentication set up by the caller); Close leaves it open.
func NewEtcdFromClient(cli *clientv3.Client, prefix string) *Etcd {
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	return &Etcd{cli: cli, prefix: prefix}
}

// Close closes the client if NewEtcd made it.
func (e *Etcd) Close() error {
	if e.owned {
		return e.cli.Close()
	}
	return nil
}

// Ping reads one key to tell whether etcd answers.
func (e *Etcd) Ping(ctx context.Context) error {
	if _, err := e.cli.Get(ctx, e.prefix+"ping", clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd store: %w", err)
	}
	return nil
}

func (e *Etcd) key(group string) string { return e.prefix + "groups/" + group }

// semaphore is the value under a group's key.
type semaphore struct {
	Holders []Holder `json:"holders"`
}

// state is a group's semaphore as read, with the revision to compare.
type state struct {
	sem semaphore
	rev int64 // mod revision of the key; 0 when it does not exist
}

func (e *Etcd) read(ctx context.Context, group string) (state, error) {
	resp, err := e.cli.Get(ctx, e.key(group))
	if err != nil {
		return state{}, fmt.Errorf("etcd store: read group %s: %w", group, err)
	}
	return decodeState(group, resp)
}

func decodeState(group string, resp *clientv3.GetResponse) (state, error) {
	if len(resp.Kvs) == 0 {
		return state{}, nil
	}
	kv := resp.Kvs[0]
	var st state
	if err := json.Unmarshal(kv.Value, &st.sem); err != nil {
		return state{}, fmt.Errorf("etcd store: group %s holds an unreadable value: %w", group, err)
	}
	st.rev = kv.ModRevision
	return st, nil
}

// swap writes sem for group if the key is still at st.rev. On a conflict
// it returns ok=false and the state etcd has now, read in the same
// transaction, so a retry costs one round trip.
func (e *Etcd) swap(ctx context.Context, group string, st state, sem semaphore) (ok bool, now state, err error) {
	key := e.key(group)
	var op clientv3.Op
	if len(sem.Holders) == 0 {
		op = clientv3.OpDelete(key) // an empty group leaves no key behind
	} else {
		b, err := json.Marshal(sem)
		if err != nil {
			return false, state{}, err
		}
		op = clientv3.OpPut(key, string(b))
	}
	// A missing key compares as mod revision 0, so this also creates.
	resp, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", st.rev)).
		Then(op).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, state{}, fmt.Errorf("etcd store: write group %s: %w", group, err)
	}
	if resp.Succeeded {
		return true, state{}, nil
	}
	rr := resp.Responses[0].GetResponseRange()
	if rr == nil {
		return false, state{}, fmt.Errorf("etcd store: write group %s: transaction answered no read", group)
	}
	now, err = decodeState(group, (*clientv3.GetResponse)(rr))
	return false, now, err
}

// backoff waits a little before retrying after a lost race, so that
// writers contending for one key do not collide again in lockstep.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(1+rand.IntN(1<<min(attempt, 6))) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("etcd store: gave up after %d conflicting writes: %w", attempt, ctx.Err())
	case <-t.C:
		return nil
	}
}

// Lock implements Store.
func (e *Etcd) Lock(ctx context.Context, group, id string, slots int, since time.Time) (Holder, bool, error) {
	st, err := e.read(ctx, group)
	for attempt := 1; ; attempt++ {
		if err != nil {
			return Holder{}, false, err
		}
		for _, h := range st.sem.Holders {
			if h.ID == id {
				return h, false, nil
			}
		}
		if len(st.sem.Holders) >= slots {
			return Holder{}, false, ErrFull
		}
		h := Holder{ID: id, Since: since}
		next := semaphore{Holders: append(append([]Holder(nil), st.sem.Holders...), h)}
		var ok bool
		if ok, st, err = e.swap(ctx, group, st, next); ok {
			return h, true, nil
		}
		if err == nil {
			err = backoff(ctx, attempt)
		}
	}
}

// Unlock implements Store.
func (e *Etcd) Unlock(ctx context.Context, group, id string) (bool, error) {
	st, err := e.read(ctx, group)
	for attempt := 1; ; attempt++ {
		if err != nil {
			return false, err
		}
		var next semaphore
		for _, h := range st.sem.Holders {
			if h.ID != id {
				next.Holders = append(next.Holders, h)
			}
		}
		if len(next.Holders) == len(st.sem.Holders) {
			return false, nil
		}
		var ok bool
		if ok, st, err = e.swap(ctx, group, st, next); ok {
			return true, nil
		}
		if err == nil {
			err = backoff(ctx, attempt)
		}
	}
}

// Holders implements Store.
func (e *Etcd) Holders(ctx context.Context, group string) (map[string][]Holder, error) {
	var resp *clientv3.GetResponse
	var err error
	if group != "" {
		resp, err = e.cli.Get(ctx, e.key(group))
	} else {
		resp, err = e.cli.Get(ctx, e.prefix+"groups/", clientv3.WithPrefix())
	}
	if err != nil {
		return nil, fmt.Errorf("etcd store: read holders: %w", err)
	}
	out := map[string][]Holder{}
	for _, kv := range resp.Kvs {
		g := strings.TrimPrefix(string(kv.Key), e.prefix+"groups/")
		var sem semaphore
		if err := json.Unmarshal(kv.Value, &sem); err != nil {
			return nil, fmt.Errorf("etcd store: group %s holds an unreadable value: %w", g, err)
		}
		if len(sem.Holders) > 0 {
			sortHolders(sem.Holders)
			out[g] = sem.Holders
		}
	}
	return out, nil
}
