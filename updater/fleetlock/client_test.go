package fleetlock

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestClientWire checks the exact request the client sends.
func TestClientWire(t *testing.T) {
	type seen struct{ method, path, header, body string }
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.Path, r.Header.Get(ProtocolHeader), string(b)})
	}))
	defer srv.Close()
	for _, base := range []string{srv.URL, srv.URL + "/", srv.URL + "/fleet", srv.URL + "/fleet/"} {
		got = nil
		c := &Client{BaseURL: base, ID: "c988d2509fdf4cdcbed39037c56406fb", Group: "workers"}
		if err := c.PreReboot(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := c.SteadyState(context.Background()); err != nil {
			t.Fatal(err)
		}
		prefix := strings.TrimSuffix(strings.TrimPrefix(base, srv.URL), "/")
		b := `{"client_params":{"id":"c988d2509fdf4cdcbed39037c56406fb","group":"workers"}}`
		want := []seen{{"POST", prefix + PathPreReboot, "true", b}, {"POST", prefix + PathSteadyState, "true", b}}
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("base %s: sent %+v, want %+v", base, got, want)
		}
	}
	got = nil
	if err := (&Client{BaseURL: srv.URL, ID: "a"}).PreReboot(context.Background()); err != nil || !strings.Contains(got[0].body, `"group":"default"`) {
		t.Fatalf("default group: %v %+v", err, got)
	}
}

// TestClientOnly200Grants: every answer but 200 is an error of the right
// class, whatever its body says.
func TestClientOnly200Grants(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		class  error
		kind   string
	}{
		{"semaphore full", 409, `{"kind":"failed_lock_semaphore_full","value":"all 1 slots held"}`, ErrLockDenied, KindSemaphoreFull},
		{"full from another server, other status", 500, `{"kind":"failed_lock_semaphore_full","value":"semaphore currently full"}`, ErrLockDenied, KindSemaphoreFull},
		{"store down", 503, `{"kind":"store_error","value":"etcd: context deadline exceeded"}`, ErrServerError, KindStoreError},
		{"5xx without a protocol body", 502, `<html>bad gateway</html>`, ErrServerError, ""},
		{"bad request", 400, `{"kind":"bad_client_params","value":"empty id"}`, ErrRejected, KindBadClientParams},
		{"404 without body", 404, ``, ErrRejected, ""},
		{"201 is not 200", 201, `{}`, ErrRejected, ""},
		{"204 is not 200", 204, ``, ErrRejected, ""},
		{"redirect is not followed", 307, ``, ErrRejected, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			followed := false
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					followed = true
					return
				}
				if tc.status == 307 {
					http.Redirect(w, r, "/elsewhere", 307)
					return
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c := &Client{BaseURL: srv.URL, ID: "a"}
			for _, op := range []func(context.Context) error{c.PreReboot, c.SteadyState} {
				err := op(context.Background())
				var se *ServerError
				if !errors.Is(err, tc.class) || !errors.As(err, &se) || se.Status != tc.status || se.Kind != tc.kind {
					t.Fatalf("got %v (%#v), want class %v status %d kind %q", err, se, tc.class, tc.status, tc.kind)
				}
				for _, other := range []error{ErrLockDenied, ErrServerError, ErrRejected, ErrTransport} {
					if other != tc.class && errors.Is(err, other) {
						t.Fatalf("%v is also %v", err, other)
					}
				}
			}
			if followed {
				t.Fatal("client followed a redirect")
			}
		})
	}
}

func TestClientTransportErrors(t *testing.T) {
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := (&Client{BaseURL: "http://" + addr, ID: "a"}).PreReboot(context.Background()); !errors.Is(err, ErrTransport) {
		t.Fatalf("closed port: %v", err)
	}

	// A server that never answers: the timeout ends the request.
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-stop }))
	defer srv.Close()
	defer close(stop)
	start := time.Now()
	err = (&Client{BaseURL: srv.URL, ID: "a", Timeout: 100 * time.Millisecond}).PreReboot(context.Background())
	if !errors.Is(err, ErrTransport) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging server: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	// And the caller's context ends it too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (&Client{BaseURL: srv.URL, ID: "a"}).SteadyState(ctx); !errors.Is(err, ErrTransport) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestClientInvalidParams(t *testing.T) {
	sent := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent = true }))
	defer srv.Close()
	for _, c := range []*Client{
		{BaseURL: srv.URL, ID: ""},
		{BaseURL: srv.URL, ID: "a", Group: "not/valid"},
		{BaseURL: "ftp://example.org", ID: "a"},
		{BaseURL: "127.0.0.1:8470", ID: "a"},
		{BaseURL: "http://[::1", ID: "a"},
	} {
		if err := c.PreReboot(context.Background()); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", c, err)
		}
	}
	if sent {
		t.Fatal("an invalid request was sent")
	}
}

// TestClientAgainstServer runs the client against the real handler
// mounted under a base path, as a reverse proxy would.
func TestClientAgainstServer(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	mux := http.NewServeMux()
	mux.Handle("/fleetlock/", http.StripPrefix("/fleetlock", s.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()
	a := &Client{BaseURL: srv.URL + "/fleetlock", ID: "a"}
	b := &Client{BaseURL: srv.URL + "/fleetlock/", ID: "b"}
	steps := []struct {
		op   func(context.Context) error
		want error
	}{
		{a.PreReboot, nil}, {a.PreReboot, nil}, {b.PreReboot, ErrLockDenied}, {b.SteadyState, nil},
		{b.PreReboot, ErrLockDenied}, {a.SteadyState, nil}, {b.PreReboot, nil}, {a.PreReboot, ErrLockDenied},
	}
	for i, st := range steps {
		if err := st.op(ctx); !errors.Is(err, st.want) || (st.want == nil) != (err == nil) {
			t.Fatalf("step %d: %v, want %v", i, err, st.want)
		}
	}
}
