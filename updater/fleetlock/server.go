package fleetlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Clock gives the server the time it records for new holders.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// DefaultStoreTimeout bounds each request's store calls.
const DefaultStoreTimeout = 10 * time.Second

// Config configures a Server.
type Config struct {
	// Store keeps the holders; required.
	Store Store
	// Slots is the slot count of every group not in GroupSlots; 0 means 1.
	Slots int
	// GroupSlots overrides the slot count per group. 0 closes a group:
	// nobody new gets a slot there, holders keep theirs.
	GroupSlots map[string]int
	// StoreTimeout bounds the store calls of one request;
	// DefaultStoreTimeout when 0.
	StoreTimeout time.Duration
	// Clock stamps new holders; the system clock when nil.
	Clock Clock
	// OnEvent, when set, is called after every lock, unlock and release
	// (the package does not log; the caller may).
	OnEvent func(Event)
}

// Event reports what the server did with one request.
type Event struct {
	Op     string // "pre-reboot", "steady-state" or "release" (admin)
	Group  string
	ID     string
	Result string // "granted", "held" (recursive grant), "denied", "released", "not-held", "error"
	Since  time.Time
	Err    error // set when Result is "error"
}

// Server answers the FleetLock protocol (Handler) and the operator API
// (AdminHandler) over one Store.
type Server struct {
	store   Store
	slots   int
	groups  map[string]int
	timeout time.Duration
	clock   Clock
	onEvent func(Event)
}

// NewServer checks cfg and returns a server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("fleetlock server: no store")
	}
	s := &Server{store: cfg.Store, slots: cfg.Slots, groups: map[string]int{},
		timeout: cfg.StoreTimeout, clock: cfg.Clock, onEvent: cfg.OnEvent}
	if s.slots == 0 {
		s.slots = 1
	}
	if s.slots < 0 {
		return nil, fmt.Errorf("fleetlock server: slots %d: want at least 1", cfg.Slots)
	}
	for g, n := range cfg.GroupSlots {
		if err := ValidGroup(g); err != nil {
			return nil, fmt.Errorf("fleetlock server: group slots: %w", err)
		}
		if n < 0 {
			return nil, fmt.Errorf("fleetlock server: group %s: slots %d: want 0 or more", g, n)
		}
		s.groups[g] = n
	}
	if s.timeout <= 0 {
		s.timeout = DefaultStoreTimeout
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	return s, nil
}

// SlotsFor returns the slot count of group.
func (s *Server) SlotsFor(group string) int {
	if n, ok := s.groups[group]; ok {
		return n
	}
	return s.slots
}

func (s *Server) event(e Event) {
	if s.onEvent != nil {
		s.onEvent(e)
	}
}

// httpError is an error answer: status code and protocol error body.
type httpError struct {
	status int
	kind   string
	value  string
}

func (e *httpError) Error() string { return e.kind + ": " + e.value }

func writeError(w http.ResponseWriter, e *httpError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	w.Write(marshalError(e.kind, e.value))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Handler serves the protocol: PathPreReboot and PathSteadyState, at the
// root (mount it under a base path with http.StripPrefix).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var op func(context.Context, clientParams) *httpError
		switch r.URL.Path {
		case PathPreReboot:
			op = s.preReboot
		case PathSteadyState:
			op = s.steadyState
		default:
			writeError(w, &httpError{http.StatusNotFound, KindNotFound, fmt.Sprintf("no FleetLock endpoint %s (want %s or %s)", r.URL.Path, PathPreReboot, PathSteadyState)})
			return
		}
		p, herr := readLockRequest(w, r)
		if herr == nil {
			ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
			defer cancel()
			herr = op(ctx, p)
		}
		if herr != nil {
			writeError(w, herr)
			return
		}
		// 200 with an empty JSON object: the protocol only looks at the
		// status code.
		writeJSON(w, struct{}{})
	})
}

// readLockRequest checks method, header and body of a protocol request.
func readLockRequest(w http.ResponseWriter, r *http.Request) (clientParams, *httpError) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return clientParams{}, &httpError{http.StatusMethodNotAllowed, KindBadMethod, fmt.Sprintf("method %s: FleetLock requests are POST", r.Method)}
	}
	if v := r.Header.Get(ProtocolHeader); v != "true" {
		return clientParams{}, &httpError{http.StatusBadRequest, KindBadHeader, fmt.Sprintf("header %s is %q, want \"true\"", ProtocolHeader, v)}
	}
	// No Content-Type check: Zincati sends its JSON without one.
	var req lockRequest
	if herr := decodeBody(w, r, &req); herr != nil {
		return clientParams{}, herr
	}
	if req.ClientParams == nil {
		return clientParams{}, &httpError{http.StatusBadRequest, KindBadBody, "body has no client_params object"}
	}
	p := *req.ClientParams
	if err := ValidID(p.ID); err != nil {
		return clientParams{}, &httpError{http.StatusBadRequest, KindBadClientParams, "client_params: " + err.Error()}
	}
	if err := ValidGroup(p.Group); err != nil {
		return clientParams{}, &httpError{http.StatusBadRequest, KindBadClientParams, "client_params: " + err.Error()}
	}
	return p, nil
}

// decodeBody reads one JSON object and nothing after it.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *httpError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &httpError{http.StatusRequestEntityTooLarge, KindBadBody, fmt.Sprintf("body larger than %d bytes", maxBody)}
		}
		return &httpError{http.StatusBadRequest, KindBadBody, "body is not the expected JSON object: " + err.Error()}
	}
	return nil
}

func storeError(err error) *httpError {
	return &httpError{http.StatusServiceUnavailable, KindStoreError, "lock store: " + err.Error()}
}

func (s *Server) preReboot(ctx context.Context, p clientParams) *httpError {
	slots := s.SlotsFor(p.Group)
	now := s.clock.Now().UTC().Round(0)
	h, taken, err := s.store.Lock(ctx, p.Group, p.ID, slots, now)
	switch {
	case errors.Is(err, ErrFull):
		s.event(Event{Op: "pre-reboot", Group: p.Group, ID: p.ID, Result: "denied"})
		msg := fmt.Sprintf("all %d reboot slots of group %s are held", slots, p.Group)
		if slots == 0 {
			msg = fmt.Sprintf("group %s has no reboot slots (closed by the server's configuration)", p.Group)
		}
		return &httpError{http.StatusConflict, KindSemaphoreFull, msg}
	case err != nil:
		s.event(Event{Op: "pre-reboot", Group: p.Group, ID: p.ID, Result: "error", Err: err})
		return storeError(err)
	}
	res := "held"
	if taken {
		res = "granted"
	}
	s.event(Event{Op: "pre-reboot", Group: p.Group, ID: p.ID, Result: res, Since: h.Since})
	return nil
}

func (s *Server) steadyState(ctx context.Context, p clientParams) *httpError {
	released, err := s.store.Unlock(ctx, p.Group, p.ID)
	if err != nil {
		s.event(Event{Op: "steady-state", Group: p.Group, ID: p.ID, Result: "error", Err: err})
		return storeError(err)
	}
	// Not holding a slot is success: the protocol's unlock is "unlock if
	// held", and Zincati sends it at every start.
	s.event(Event{Op: "steady-state", Group: p.Group, ID: p.ID, Result: map[bool]string{true: "released", false: "not-held"}[released]})
	return nil
}

// Admin paths, served by AdminHandler.
const (
	AdminPathStatus  = "/admin/v1/status"
	AdminPathRelease = "/admin/v1/release"
)

// AdminHandler serves the operator API, which is not part of FleetLock:
//
//	GET  /admin/v1/status[?group=G]  the holders per group (Status)
//	POST /admin/v1/release           {"group":G,"id":ID}: release a stale holder
//
// It has no authentication: serve it on a loopback or otherwise private
// listener.
func (s *Server) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var herr *httpError
		switch r.URL.Path {
		case AdminPathStatus:
			herr = s.adminStatus(w, r)
		case AdminPathRelease:
			herr = s.adminRelease(w, r)
		default:
			herr = &httpError{http.StatusNotFound, KindNotFound, fmt.Sprintf("no admin endpoint %s (want %s or %s)", r.URL.Path, AdminPathStatus, AdminPathRelease)}
		}
		if herr != nil {
			writeError(w, herr)
		}
	})
}

func (s *Server) adminStatus(w http.ResponseWriter, r *http.Request) *httpError {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return &httpError{http.StatusMethodNotAllowed, KindBadMethod, fmt.Sprintf("method %s: status is GET", r.Method)}
	}
	group := r.URL.Query().Get("group")
	if group != "" {
		if err := ValidGroup(group); err != nil {
			return &httpError{http.StatusBadRequest, KindBadClientParams, err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	st, err := s.Status(ctx, group)
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, st)
	return nil
}

func (s *Server) adminRelease(w http.ResponseWriter, r *http.Request) *httpError {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return &httpError{http.StatusMethodNotAllowed, KindBadMethod, fmt.Sprintf("method %s: release is POST", r.Method)}
	}
	// A JSON content type makes a browser ask before a cross-site POST
	// (CORS preflight), so a web page cannot release locks through an
	// operator's loopback listener.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return &httpError{http.StatusUnsupportedMediaType, KindBadBody, "release takes Content-Type: application/json"}
	}
	var req releaseRequest
	if herr := decodeBody(w, r, &req); herr != nil {
		return herr
	}
	if err := ValidGroup(req.Group); err != nil {
		return &httpError{http.StatusBadRequest, KindBadClientParams, err.Error()}
	}
	if err := ValidID(req.ID); err != nil {
		return &httpError{http.StatusBadRequest, KindBadClientParams, err.Error()}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	released, err := s.Release(ctx, req.Group, req.ID)
	if err != nil {
		return storeError(err)
	}
	if !released {
		return &httpError{http.StatusNotFound, KindNotHeld, fmt.Sprintf("%s holds no reboot slot in group %s", req.ID, req.Group)}
	}
	writeJSON(w, releaseResponse{Released: true, Group: req.Group, ID: req.ID})
	return nil
}

// Status returns the holders of every group (or of group when not empty),
// with every group that has a configured slot count.
func (s *Server) Status(ctx context.Context, group string) (*Status, error) {
	hs, err := s.store.Holders(ctx, group)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for g := range hs {
		names[g] = true
	}
	for g := range s.groups {
		if group == "" || g == group {
			names[g] = true
		}
	}
	if group != "" {
		names[group] = true
	}
	st := &Status{DefaultSlots: s.slots, Groups: []GroupStatus{}}
	for g := range names {
		list := hs[g]
		if list == nil {
			list = []Holder{}
		}
		st.Groups = append(st.Groups, GroupStatus{Group: g, Slots: s.SlotsFor(g), Holders: list})
	}
	sort.Slice(st.Groups, func(i, j int) bool { return strings.Compare(st.Groups[i].Group, st.Groups[j].Group) < 0 })
	return st, nil
}

// Release frees the slot id holds in group, for an operator clearing a
// holder that will not release it (a node that died or was removed).
func (s *Server) Release(ctx context.Context, group, id string) (bool, error) {
	released, err := s.store.Unlock(ctx, group, id)
	switch {
	case err != nil:
		s.event(Event{Op: "release", Group: group, ID: id, Result: "error", Err: err})
	case released:
		s.event(Event{Op: "release", Group: group, ID: id, Result: "released"})
	default:
		s.event(Event{Op: "release", Group: group, ID: id, Result: "not-held"})
	}
	return released, err
}
