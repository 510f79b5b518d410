package fleetlock

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)

func newTestServer(t *testing.T, cfg Config) (*Server, *fakeClock, *[]Event) {
	t.Helper()
	clock := &fakeClock{t: t0}
	var mu sync.Mutex
	events := &[]Event{}
	if cfg.Store == nil {
		cfg.Store = NewMemory()
	}
	cfg.Clock = clock
	cfg.OnEvent = func(e Event) {
		mu.Lock()
		*events = append(*events, e)
		mu.Unlock()
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, clock, events
}

// post sends a protocol request the way Zincati does and returns status
// and body.
func post(t *testing.T, h http.Handler, method, path, header, body string) (int, ErrorBody) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if header != "" {
		req.Header.Set(ProtocolHeader, header)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var eb ErrorBody
	if rec.Code != http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
			t.Fatalf("%s %s: status %d with a body that is not a protocol error: %q", method, path, rec.Code, rec.Body.String())
		}
		if eb.Kind == "" || eb.Value == "" {
			t.Fatalf("%s %s: error body with empty kind or value: %q", method, path, rec.Body.String())
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("error Content-Type %q", ct)
		}
	}
	return rec.Code, eb
}

func body(id, group string) string {
	b, _ := json.Marshal(map[string]any{"client_params": map[string]string{"id": id, "group": group}})
	return string(b)
}

// TestProtocol walks one group with two slots through the protocol's cases
// in order; each step sees the state the previous ones left.
func TestProtocol(t *testing.T) {
	s, clock, _ := newTestServer(t, Config{Slots: 2, GroupSlots: map[string]int{"db": 1, "frozen": 0}})
	h := s.Handler()
	steps := []struct {
		name, method, path, header, body string
		status                           int
		kind                             string
	}{
		{"grant", "POST", PathPreReboot, "true", body("a", "default"), 200, ""},
		{"recursive grant", "POST", PathPreReboot, "true", body("a", "default"), 200, ""},
		{"second slot", "POST", PathPreReboot, "true", body("b", "default"), 200, ""},
		{"deny when full", "POST", PathPreReboot, "true", body("c", "default"), 409, KindSemaphoreFull},
		{"holder still granted when full", "POST", PathPreReboot, "true", body("b", "default"), 200, ""},
		{"ids are case-sensitive", "POST", PathPreReboot, "true", body("A", "default"), 409, KindSemaphoreFull},
		{"non-holder steady-state", "POST", PathSteadyState, "true", body("c", "default"), 200, ""},
		{"non-holder steady-state did not free a slot", "POST", PathPreReboot, "true", body("c", "default"), 409, KindSemaphoreFull},
		{"release", "POST", PathSteadyState, "true", body("a", "default"), 200, ""},
		{"released slot is free", "POST", PathPreReboot, "true", body("c", "default"), 200, ""},
		{"release twice", "POST", PathSteadyState, "true", body("a", "default"), 200, ""},
		{"groups are separate", "POST", PathPreReboot, "true", body("a", "db"), 200, ""},
		{"group override", "POST", PathPreReboot, "true", body("b", "db"), 409, KindSemaphoreFull},
		{"closed group", "POST", PathPreReboot, "true", body("a", "frozen"), 409, KindSemaphoreFull},
		{"GET", "GET", PathPreReboot, "true", "", 405, KindBadMethod},
		{"PUT", "PUT", PathSteadyState, "true", body("a", "default"), 405, KindBadMethod},
		{"no header", "POST", PathPreReboot, "", body("d", "x"), 400, KindBadHeader},
		{"header false", "POST", PathPreReboot, "false", body("d", "x"), 400, KindBadHeader},
		{"header True", "POST", PathSteadyState, "True", body("a", "default"), 400, KindBadHeader},
		{"empty body", "POST", PathPreReboot, "true", "", 400, KindBadBody},
		{"not JSON", "POST", PathPreReboot, "true", "id=a&group=x", 400, KindBadBody},
		{"no client_params", "POST", PathPreReboot, "true", `{"id":"d","group":"x"}`, 400, KindBadBody},
		{"client_params not an object", "POST", PathPreReboot, "true", `{"client_params":"d"}`, 400, KindBadBody},
		{"two JSON values", "POST", PathPreReboot, "true", body("d", "x") + body("e", "x"), 400, KindBadBody},
		{"too large", "POST", PathPreReboot, "true", `{"client_params":{"id":"` + strings.Repeat("x", maxBody) + `","group":"x"}}`, 413, KindBadBody},
		{"empty id", "POST", PathPreReboot, "true", body("", "x"), 400, KindBadClientParams},
		{"long id", "POST", PathPreReboot, "true", body(strings.Repeat("x", MaxIDLength+1), "x"), 400, KindBadClientParams},
		{"control character in id", "POST", PathPreReboot, "true", body("a\nb", "x"), 400, KindBadClientParams},
		// Raw bytes: json.Marshal would have fixed them up.
		{"invalid UTF-8 in id", "POST", PathPreReboot, "true", "{\"client_params\":{\"id\":\"node\xff\",\"group\":\"x\"}}", 400, KindBadClientParams},
		{"lone surrogate in id", "POST", PathPreReboot, "true", `{"client_params":{"id":"node\udc00","group":"x"}}`, 400, KindBadClientParams},
		{"empty group", "POST", PathPreReboot, "true", body("d", ""), 400, KindBadClientParams},
		{"bad group", "POST", PathPreReboot, "true", body("d", "a/b"), 400, KindBadClientParams},
		{"old node_uuid field", "POST", PathPreReboot, "true", `{"client_params":{"node_uuid":"d","group":"x"}}`, 400, KindBadClientParams},
		{"unknown path", "POST", "/v1/reboot", "true", body("d", "x"), 404, KindNotFound},
		{"trailing slash", "POST", PathPreReboot + "/", "true", body("d", "x"), 404, KindNotFound},
		{"admin not on the protocol handler", "GET", AdminPathStatus, "", "", 404, KindNotFound},
		// Zincati's body: pretty-printed, group first, no Content-Type,
		// unknown fields ignored.
		{"zincati body", "POST", PathPreReboot, "true", "{\n  \"client_params\": {\n    \"group\": \"workers\",\n    \"id\": \"c988d2509fdf5cdcbed39037c56406fb\"\n  },\n  \"extra\": 1\n}", 200, ""},
	}
	for _, st := range steps {
		clock.Add(time.Second)
		code, eb := post(t, h, st.method, st.path, st.header, st.body)
		if code != st.status || eb.Kind != st.kind {
			t.Fatalf("%s: got %d %q (%s), want %d %q", st.name, code, eb.Kind, eb.Value, st.status, st.kind)
		}
	}
	st, err := s.Status(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]Holder{}
	for _, g := range st.Groups {
		got[g.Group] = g.Holders
	}
	want := map[string][]Holder{
		"default": {{ID: "b", Since: t0.Add(3 * time.Second)}, {ID: "c", Since: t0.Add(10 * time.Second)}},
		"db":      {{ID: "a", Since: t0.Add(12 * time.Second)}},
		"frozen":  {},
		"workers": {{ID: "c988d2509fdf5cdcbed39037c56406fb", Since: t0.Add(time.Duration(len(steps)) * time.Second)}},
	}
	if !equalHolders(got, want) {
		t.Fatalf("holders:\n got %v\nwant %v", got, want)
	}
}

func equalHolders(a, b map[string][]Holder) bool {
	if len(a) != len(b) {
		return false
	}
	for g, ha := range a {
		hb, ok := b[g]
		if !ok || len(ha) != len(hb) {
			return false
		}
		for i := range ha {
			if ha[i].ID != hb[i].ID || !ha[i].Since.Equal(hb[i].Since) {
				return false
			}
		}
	}
	return true
}

func TestRecursiveLockKeepsSince(t *testing.T) {
	s, clock, events := newTestServer(t, Config{})
	h := s.Handler()
	for i := 0; i < 3; i++ {
		if code, eb := post(t, h, "POST", PathPreReboot, "true", body("a", "default")); code != 200 {
			t.Fatalf("lock %d: %d %v", i, code, eb)
		}
		clock.Add(time.Minute)
	}
	st, _ := s.Status(context.Background(), "default")
	if hs := st.Groups[0].Holders; len(hs) != 1 || !hs[0].Since.Equal(t0) {
		t.Fatalf("holders %v, want a since %v", hs, t0)
	}
	var results []string
	for _, e := range *events {
		results = append(results, e.Op+":"+e.Result)
	}
	if got := strings.Join(results, " "); got != "pre-reboot:granted pre-reboot:held pre-reboot:held" {
		t.Fatalf("events %s", got)
	}
}

func TestLoweredSlotsKeepHolders(t *testing.T) {
	store := NewMemory()
	s1, _, _ := newTestServer(t, Config{Store: store, Slots: 3})
	for _, id := range []string{"a", "b", "c"} {
		if code, _ := post(t, s1.Handler(), "POST", PathPreReboot, "true", body(id, "default")); code != 200 {
			t.Fatalf("lock %s: %d", id, code)
		}
	}
	// Restarted with one slot: the three keep theirs, and nobody new gets
	// one until fewer than one hold a slot.
	s2, _, _ := newTestServer(t, Config{Store: store, Slots: 1})
	h := s2.Handler()
	expect := func(op, path, id string, status int) {
		t.Helper()
		if code, eb := post(t, h, "POST", path, "true", body(id, "default")); code != status {
			t.Fatalf("%s %s: %d %v, want %d", op, id, code, eb, status)
		}
	}
	expect("lock", PathPreReboot, "b", 200)
	expect("lock", PathPreReboot, "d", 409)
	expect("unlock", PathSteadyState, "a", 200)
	expect("unlock", PathSteadyState, "b", 200)
	expect("lock", PathPreReboot, "d", 409)
	expect("unlock", PathSteadyState, "c", 200)
	expect("lock", PathPreReboot, "d", 200)
}

// failingStore answers every call with an error, or blocks until the
// request's deadline.
type failingStore struct{ block bool }

func (f failingStore) wait(ctx context.Context) error {
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return errors.New("connection refused")
}

func (f failingStore) Lock(ctx context.Context, group, id string, slots int, since time.Time) (Holder, bool, error) {
	return Holder{}, false, f.wait(ctx)
}

func (f failingStore) Unlock(ctx context.Context, group, id string) (bool, error) {
	return false, f.wait(ctx)
}

func (f failingStore) Holders(ctx context.Context, group string) (map[string][]Holder, error) {
	return nil, f.wait(ctx)
}

func TestStoreErrorNeverGrants(t *testing.T) {
	for _, block := range []bool{false, true} {
		s, _, events := newTestServer(t, Config{Store: failingStore{block: block}, StoreTimeout: 50 * time.Millisecond})
		srv := httptest.NewServer(s.Handler())
		admin := httptest.NewServer(s.AdminHandler())
		c := &Client{BaseURL: srv.URL, ID: "a"}
		for _, op := range []func(context.Context) error{c.PreReboot, c.SteadyState} {
			err := op(context.Background())
			var se *ServerError
			if !errors.Is(err, ErrServerError) || !errors.As(err, &se) || se.Kind != KindStoreError || se.Status != 503 {
				t.Fatalf("block=%v: %v, want a 503 %s", block, err, KindStoreError)
			}
		}
		ac := &AdminClient{BaseURL: admin.URL}
		if _, err := ac.Status(context.Background(), ""); !errors.Is(err, ErrServerError) {
			t.Fatalf("status: %v", err)
		}
		if err := ac.Release(context.Background(), "default", "a"); !errors.Is(err, ErrServerError) || errors.Is(err, ErrNotHeld) {
			t.Fatalf("release: %v", err)
		}
		for _, e := range *events {
			if e.Result != "error" || e.Err == nil {
				t.Fatalf("event %+v, want an error", e)
			}
		}
		srv.Close()
		admin.Close()
	}
}

func TestAdmin(t *testing.T) {
	s, clock, events := newTestServer(t, Config{GroupSlots: map[string]int{"db": 2}})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	ctx := context.Background()
	for _, n := range []struct{ id, group string }{{"a", "default"}, {"b", "db"}, {"c", "db"}} {
		clock.Add(time.Minute)
		if err := (&Client{BaseURL: srv.URL, ID: n.id, Group: n.group}).PreReboot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ac := &AdminClient{BaseURL: admin.URL}
	st, err := ac.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	want := `{"default_slots":1,"groups":[{"group":"db","slots":2,"holders":[{"id":"b","since":"2026-03-29T01:32:00Z"},{"id":"c","since":"2026-03-29T01:33:00Z"}]},{"group":"default","slots":1,"holders":[{"id":"a","since":"2026-03-29T01:31:00Z"}]}]}`
	if string(b) != want {
		t.Fatalf("status\n got %s\nwant %s", b, want)
	}
	st, err = ac.Status(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(st); string(b) != `{"default_slots":1,"groups":[{"group":"other","slots":1,"holders":[]}]}` {
		t.Fatalf("status of an empty group: %s", b)
	}

	if err := ac.Release(ctx, "db", "b"); err != nil {
		t.Fatal(err)
	}
	if err := ac.Release(ctx, "db", "b"); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("second release: %v, want ErrNotHeld", err)
	}
	if err := ac.Release(ctx, "default", "c"); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release in the wrong group: %v, want ErrNotHeld", err)
	}
	st, _ = ac.Status(ctx, "db")
	if len(st.Groups) != 1 || len(st.Groups[0].Holders) != 1 || st.Groups[0].Holders[0].ID != "c" {
		t.Fatalf("after release: %+v", st)
	}
	last := (*events)[len(*events)-1]
	if last.Op != "release" || last.Result != "not-held" {
		t.Fatalf("last event %+v", last)
	}

	// The admin API's own input checks.
	for _, tc := range []struct {
		method, path, ctype, body string
		status                    int
		kind                      string
	}{
		{"POST", AdminPathStatus, "", "", 405, KindBadMethod},
		{"GET", AdminPathStatus + "?group=a/b", "", "", 400, KindBadClientParams},
		{"GET", AdminPathRelease, "", "", 405, KindBadMethod},
		{"POST", AdminPathRelease, "text/plain", `{"group":"db","id":"c"}`, 415, KindBadBody},
		{"POST", AdminPathRelease, "application/json", `{"group":"db"}`, 400, KindBadClientParams},
		{"POST", AdminPathRelease, "application/json", `{"group":"db","id":"c"`, 400, KindBadBody},
		{"POST", PathPreReboot, "application/json", body("c", "db"), 404, KindNotFound},
	} {
		req, _ := http.NewRequest(tc.method, admin.URL+tc.path, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb ErrorBody
		json.Unmarshal(rb, &eb)
		if resp.StatusCode != tc.status || eb.Kind != tc.kind {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, resp.StatusCode, rb, tc.status, tc.kind)
		}
	}
}

func TestNewServerRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Store: NewMemory(), Slots: -1},
		{Store: NewMemory(), GroupSlots: map[string]int{"a b": 1}},
		{Store: NewMemory(), GroupSlots: map[string]int{"a": -1}},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("NewServer(%+v) accepted", cfg)
		}
	}
}
