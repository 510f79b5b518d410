package fleetlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"sealift/internal/testutil"
)

// etcdProc is a real etcd (Debian's etcd-server) on 127.0.0.1 with its
// data in a temp dir, started and stopped by the test.
type etcdProc struct {
	t                  *testing.T
	bin, dir           string
	clientURL, peerURL string
	cmd                *exec.Cmd
	exited             chan struct{}
	log                *os.File
}

// startEtcd starts a one-member etcd; a port taken between choosing and
// binding it is retried with new ports.
func startEtcd(t *testing.T) *etcdProc {
	t.Helper()
	bin := testutil.RequireTool(t, "etcd")
	dir := t.TempDir()
	var lastErr error
	for try := 0; try < 3; try++ {
		e := &etcdProc{t: t, bin: bin, dir: dir,
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t)),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))}
		if lastErr = e.start(); lastErr == nil {
			t.Cleanup(e.kill)
			return e
		}
		os.RemoveAll(filepath.Join(dir, "data"))
	}
	t.Fatalf("etcd did not start: %v", lastErr)
	return nil
}

func (e *etcdProc) start() error {
	log, err := os.OpenFile(filepath.Join(e.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	e.log = log
	e.cmd = exec.Command(e.bin,
		"--name", "sealift-test",
		"--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", e.clientURL, "--advertise-client-urls", e.clientURL,
		"--listen-peer-urls", e.peerURL, "--initial-advertise-peer-urls", e.peerURL,
		"--initial-cluster", "sealift-test="+e.peerURL,
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
	e.cmd.Stdout, e.cmd.Stderr = log, log
	if err := e.cmd.Start(); err != nil {
		log.Close()
		return err
	}
	e.exited = make(chan struct{})
	go func() { e.cmd.Wait(); close(e.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-e.exited:
			return fmt.Errorf("etcd exited: %s", e.logTail())
		default:
		}
		resp, err := http.Get(e.clientURL + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(b), `"true"`) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.kill()
	return fmt.Errorf("etcd not healthy after 30s: %s", e.logTail())
}

func (e *etcdProc) logTail() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "etcd.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// kill stops etcd by its pid, the way a crash or a lost machine would.
func (e *etcdProc) kill() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	select {
	case <-e.exited:
	default:
		syscall.Kill(e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.exited
	}
	e.log.Close()
}

// restart starts etcd again on the same ports and data.
func (e *etcdProc) restart() {
	e.t.Helper()
	if err := e.start(); err != nil {
		e.t.Fatal(err)
	}
}

func newEtcdStore(t *testing.T, e *etcdProc) *Etcd {
	t.Helper()
	s, err := NewEtcd(EtcdConfig{Endpoints: []string{e.clientURL}, Prefix: "test/" + t.Name() + "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testStore checks the Store contract on an empty store.
func testStore(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lock := func(group, id string, slots int, since time.Time, wantTaken bool, wantErr error) Holder {
		t.Helper()
		h, taken, err := s.Lock(ctx, group, id, slots, since)
		if !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) || taken != wantTaken {
			t.Fatalf("Lock(%s, %s, %d): %v %v, want taken=%v err=%v", group, id, slots, taken, err, wantTaken, wantErr)
		}
		return h
	}
	unlock := func(group, id string, want bool) {
		t.Helper()
		ok, err := s.Unlock(ctx, group, id)
		if err != nil || ok != want {
			t.Fatalf("Unlock(%s, %s): %v %v, want %v", group, id, ok, err, want)
		}
	}
	lock("g", "a", 2, t0, true, nil)
	if h := lock("g", "a", 2, t0.Add(time.Hour), false, nil); h.ID != "a" || !h.Since.Equal(t0) {
		t.Fatalf("recursive lock returned %+v", h)
	}
	lock("g", "b", 2, t0.Add(time.Minute), true, nil)
	lock("g", "c", 2, t0, false, ErrFull)
	lock("g", "a", 1, t0, false, nil) // over a lowered count, still held
	lock("h", "c", 1, t0.Add(2*time.Minute), true, nil)
	lock("closed", "c", 0, t0, false, ErrFull)
	hs, err := s.Holders(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]Holder{"g": {{"a", t0}, {"b", t0.Add(time.Minute)}}, "h": {{"c", t0.Add(2 * time.Minute)}}}
	if !equalHolders(hs, want) {
		t.Fatalf("Holders: %v, want %v", hs, want)
	}
	if hs, _ := s.Holders(ctx, "h"); !equalHolders(hs, map[string][]Holder{"h": want["h"]}) {
		t.Fatalf("Holders(h): %v", hs)
	}
	unlock("g", "c", false)
	unlock("g", "a", true)
	unlock("g", "a", false)
	unlock("g", "b", true)
	unlock("h", "c", true)
	if hs, err := s.Holders(ctx, ""); err != nil || len(hs) != 0 {
		t.Fatalf("Holders after all unlocked: %v %v", hs, err)
	}
	lock("g", "c", 1, t0, true, nil)
}

func TestMemoryStore(t *testing.T) { testStore(t, NewMemory()) }

func TestEtcdStore(t *testing.T) {
	e := startEtcd(t)
	testStore(t, newEtcdStore(t, e))
}

// TestEtcdUnreadableValue: a value the store cannot read is an error,
// never an empty group that would grant.
func TestEtcdUnreadableValue(t *testing.T) {
	e := startEtcd(t)
	s := newEtcdStore(t, e)
	ctx := context.Background()
	if _, err := s.cli.Put(ctx, s.key("g"), "not json"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Lock(ctx, "g", "a", 1, t0); err == nil || errors.Is(err, ErrFull) {
		t.Fatalf("Lock over garbage: %v", err)
	}
	if _, err := s.Unlock(ctx, "g", "a"); err == nil {
		t.Fatal("Unlock over garbage succeeded")
	}
	if _, err := s.Holders(ctx, ""); err == nil {
		t.Fatal("Holders over garbage succeeded")
	}
}

// TestLostEtcdNeverGrants kills etcd under a running server: every
// protocol request then fails (no grant, and no release either, since the
// server cannot record it), and after etcd restarts the holders are as
// they were.
func TestLostEtcdNeverGrants(t *testing.T) {
	e := startEtcd(t)
	store := newEtcdStore(t, e)
	s, _, _ := newTestServer(t, Config{Store: store, StoreTimeout: 500 * time.Millisecond})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	adminSrv := httptest.NewServer(s.AdminHandler())
	defer adminSrv.Close()
	admin := &AdminClient{BaseURL: adminSrv.URL}
	ctx := context.Background()
	a := &Client{BaseURL: srv.URL, ID: "a", Timeout: 10 * time.Second}
	b := &Client{BaseURL: srv.URL, ID: "b", Timeout: 10 * time.Second}
	if err := a.PreReboot(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := admin.Status(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}

	e.kill()
	for _, tc := range []struct {
		name string
		op   func(context.Context) error
	}{
		{"b asks for the slot a holds", b.PreReboot},
		{"a re-takes its own slot", a.PreReboot},
		{"a releases", a.SteadyState},
		{"b releases what it does not hold", b.SteadyState},
	} {
		err := tc.op(ctx)
		var se *ServerError
		if !errors.As(err, &se) || !errors.Is(err, ErrServerError) || se.Kind != KindStoreError {
			t.Fatalf("%s with etcd down: %v, want a %s error", tc.name, err, KindStoreError)
		}
	}
	// A group nobody holds must not be granted either.
	c := &Client{BaseURL: srv.URL, ID: "c", Group: "empty", Timeout: 10 * time.Second}
	if err := c.PreReboot(ctx); !errors.Is(err, ErrServerError) {
		t.Fatalf("empty group with etcd down: %v", err)
	}
	if _, err := admin.Status(ctx, ""); !errors.Is(err, ErrServerError) {
		t.Fatalf("status with etcd down: %v", err)
	}
	if err := admin.Release(ctx, "default", "a"); !errors.Is(err, ErrServerError) {
		t.Fatalf("release with etcd down: %v", err)
	}

	e.restart()
	// The client reconnects with backoff; wait for the first answer.
	var after *Status
	deadline := time.Now().Add(60 * time.Second)
	for {
		if after, err = admin.Status(ctx, "default"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("etcd back, status still failing: %v", err)
	}
	if !equalHolders(map[string][]Holder{"d": before.Groups[0].Holders}, map[string][]Holder{"d": after.Groups[0].Holders}) {
		t.Fatalf("holders changed across the outage: %v -> %v", before.Groups[0].Holders, after.Groups[0].Holders)
	}
	if err := b.PreReboot(ctx); !errors.Is(err, ErrLockDenied) {
		t.Fatalf("b after the outage: %v, want ErrLockDenied", err)
	}
	if err := c.PreReboot(ctx); err != nil {
		t.Fatalf("empty group after the outage: %v", err)
	}
	if err := a.SteadyState(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PreReboot(ctx); err != nil {
		t.Fatalf("b after a released: %v", err)
	}
}

// TestEtcdCompareAndSwap races two store instances writing one group
// directly: the one whose read is stale must not overwrite the other.
func TestEtcdCompareAndSwap(t *testing.T) {
	e := startEtcd(t)
	s := newEtcdStore(t, e)
	ctx := context.Background()
	st, err := s.read(ctx, "g")
	if err != nil || st.rev != 0 {
		t.Fatalf("read empty group: %+v %v", st, err)
	}
	ok, _, err := s.swap(ctx, "g", st, semaphore{Holders: []Holder{{"a", t0}}})
	if err != nil || !ok {
		t.Fatalf("first swap: %v %v", ok, err)
	}
	// The same stale read again: the key exists now, so this must fail
	// and hand back what etcd has.
	ok, now, err := s.swap(ctx, "g", st, semaphore{Holders: []Holder{{"b", t0}}})
	if err != nil || ok {
		t.Fatalf("stale swap: %v %v", ok, err)
	}
	if len(now.sem.Holders) != 1 || now.sem.Holders[0].ID != "a" || now.rev == 0 {
		t.Fatalf("state after a lost swap: %+v", now)
	}
	// Another writer changes the key behind a fresh read.
	st, _ = s.read(ctx, "g")
	if _, err := s.cli.Put(ctx, s.key("g"), `{"holders":[{"id":"x","since":"2026-01-01T00:00:00Z"}]}`, clientv3.WithPrevKV()); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.swap(ctx, "g", st, semaphore{}); ok || err != nil {
		t.Fatalf("delete over a changed key: %v %v", ok, err)
	}
	hs, _ := s.Holders(ctx, "g")
	if len(hs["g"]) != 1 || hs["g"][0].ID != "x" {
		t.Fatalf("holders %v", hs)
	}
}
