package fleetlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hammer runs one goroutine per node, each taking the group's lock
// through a FleetLock HTTP server, "rebooting" (holding it a moment),
// then releasing it, rounds times. The nodes are spread over the given
// server URLs. A node counts itself in after its grant and out before
// its release, so the count can only exceed the slots if the servers
// handed out more slots than they have. A second checker polls the store.
func hammer(t *testing.T, urls []string, store Store, slots, nodes, rounds int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var rebooting, maxRebooting, granted, denied atomic.Int64
	var violation atomic.Value
	var wg sync.WaitGroup
	for n := 0; n < nodes; n++ {
		c := &Client{BaseURL: urls[n%len(urls)], ID: fmt.Sprintf("node-%02d", n), Group: "hammer", Timeout: 30 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds && ctx.Err() == nil; {
				err := c.PreReboot(ctx)
				if errors.Is(err, ErrLockDenied) {
					denied.Add(1)
					time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
					continue
				}
				if err != nil {
					violation.CompareAndSwap(nil, fmt.Sprintf("%s pre-reboot: %v", c.ID, err))
					return
				}
				r++
				granted.Add(1)
				now := rebooting.Add(1)
				for m := maxRebooting.Load(); now > m && !maxRebooting.CompareAndSwap(m, now); m = maxRebooting.Load() {
				}
				if now > int64(slots) {
					violation.CompareAndSwap(nil, fmt.Sprintf("%d nodes rebooting at once with %d slots", now, slots))
				}
				time.Sleep(time.Duration(2000+rand.IntN(4000)) * time.Microsecond)
				rebooting.Add(-1)
				if err := c.SteadyState(ctx); err != nil {
					violation.CompareAndSwap(nil, fmt.Sprintf("%s steady-state: %v", c.ID, err))
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	var checks atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			hs, err := store.Holders(ctx, "hammer")
			if err == nil {
				checks.Add(1)
				if len(hs["hammer"]) > slots {
					violation.CompareAndSwap(nil, fmt.Sprintf("store lists %d holders with %d slots: %v", len(hs["hammer"]), slots, hs["hammer"]))
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	close(stop)
	if v := violation.Load(); v != nil {
		t.Fatal(v)
	}
	if ctx.Err() != nil {
		t.Fatalf("hammer did not finish: %d of %d grants", granted.Load(), nodes*rounds)
	}
	if granted.Load() != int64(nodes*rounds) {
		t.Fatalf("%d grants, want %d", granted.Load(), nodes*rounds)
	}
	if denied.Load() == 0 {
		t.Fatal("no request was ever denied: the nodes did not contend")
	}
	// The slots are used, not only never exceeded.
	if maxRebooting.Load() != int64(slots) {
		t.Fatalf("at most %d nodes rebooted at once with %d slots", maxRebooting.Load(), slots)
	}
	t.Logf("%d grants, %d denials, at most %d rebooting at once with %d slots; %d store checks",
		granted.Load(), denied.Load(), maxRebooting.Load(), slots, checks.Load())
	hs, err := store.Holders(context.Background(), "")
	if err != nil || len(hs) != 0 {
		t.Fatalf("holders left after every node released: %v %v", hs, err)
	}
}

func TestTwoAgentsNeverHoldOneSlotTogetherMemory(t *testing.T) {
	for _, slots := range []int{1, 2} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) {
			store := NewMemory()
			s, err := NewServer(Config{Store: store, Slots: slots})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			hammer(t, []string{srv.URL}, store, slots, 8, 20)
		})
	}
}

// TestTwoAgentsNeverHoldOneSlotTogetherEtcd puts two servers, each with
// its own etcd client, in front of one etcd: only the store's
// compare-and-swap keeps their grants apart.
func TestTwoAgentsNeverHoldOneSlotTogetherEtcd(t *testing.T) {
	e := startEtcd(t)
	for _, slots := range []int{1, 2} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) {
			var urls []string
			var first Store
			for i := 0; i < 2; i++ {
				store := newEtcdStore(t, e)
				if first == nil {
					first = store
				}
				s, err := NewServer(Config{Store: store, Slots: slots, StoreTimeout: 30 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				srv := httptest.NewServer(s.Handler())
				t.Cleanup(srv.Close)
				urls = append(urls, srv.URL)
			}
			hammer(t, urls, first, slots, 8, 10)
		})
	}
}
