package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"sealift/bootloader"
	"sealift/updater"
	"sealift/updater/state"
)

// Operator is what the local API does besides the agent's own loop.
type Operator interface {
	Cancel(ctx context.Context, a updater.Actor) (*updater.CancelResult, error)
	Rollback(ctx context.Context, a updater.Actor) (*updater.RollbackResult, error)
	Events(ctx context.Context, after uint64) ([]state.Event, error)
	SetHold(ctx context.Context, r updater.HoldRequest) (*updater.HoldChange, error)
	// ClearHolds lifts the holds of kind (all, when empty; a skip of
	// version only), updater.ErrNoHold when there is none.
	ClearHolds(ctx context.Context, kind state.HoldKind, version string, a updater.Actor) ([]state.Hold, error)
}

// API paths of the local REST API (docs/agent.md).
const (
	PathStatus   = "/v1/status"
	PathCheck    = "/v1/check"
	PathApply    = "/v1/apply"
	PathCancel   = "/v1/cancel"
	PathRollback = "/v1/rollback"
	PathEvents   = "/v1/events"
	PathHolds    = "/v1/holds"
)

// StatusReply is GET /v1/status: the node's status and the agent's.
type StatusReply struct {
	Node  *updater.Status `json:"node"`
	Agent AgentStatus     `json:"agent"`
}

// AgentStatus is the agent's part of a status reply.
type AgentStatus struct {
	Reboot   Strategy `json:"reboot_strategy"`
	Interval string   `json:"interval"`
	Last     StepInfo `json:"last_step"`
}

// ErrorReply is the body of every non-2xx answer.
type ErrorReply struct {
	Error string `json:"error"`
	// Busy is true when the agent was changing the disk (HTTP 409).
	Busy bool `json:"busy,omitempty"`
	// Code names the refusal a caller may branch on: one of the Code
	// constants, or empty.
	Code string `json:"code,omitempty"`
}

// Codes of ErrorReply, each standing for an error callers branch on;
// APIError unwraps to it, so the CLI answers the same through the agent
// as on the disk.
const (
	CodeNoPending   = "no-pending"   // updater.ErrNoPending
	CodeNoHold      = "no-hold"      // updater.ErrNoHold
	CodeBadInput    = "bad-input"    // updater.ErrBadInput
	CodeNotBootable = "not-bootable" // bootloader.ErrNotBootable
	CodeHeld        = "held"         // ErrHeld
)

// ErrHeld: an operator's hold refuses the request (apply while paused).
var ErrHeld = errors.New("held by the operator")

// codeErrors pairs codes and errors, in the order answerErr tries them.
var codeErrors = []struct {
	code string
	err  error
}{
	{CodeNoPending, updater.ErrNoPending},
	{CodeNoHold, updater.ErrNoHold},
	{CodeBadInput, updater.ErrBadInput},
	{CodeNotBootable, bootloader.ErrNotBootable},
	{CodeHeld, ErrHeld},
}

// Handler serves the local API. wake is poked after "apply now".
func (a *Agent) Handler(ops Operator, wake chan<- struct{}) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Node.Status(r.Context())
		if err != nil {
			reply(w, http.StatusInternalServerError, ErrorReply{Error: err.Error()})
			return
		}
		p := a.Policy()
		reply(w, http.StatusOK, StatusReply{Node: st, Agent: AgentStatus{Reboot: p.Reboot, Interval: p.Interval.String(), Last: a.Last()}})
	})
	mux.HandleFunc("GET "+PathCheck, func(w http.ResponseWriter, r *http.Request) {
		res, err := a.Node.Check(r.Context())
		if err != nil {
			reply(w, http.StatusBadGateway, ErrorReply{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, res)
	})
	poke := func() {
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	mux.HandleFunc("POST "+PathApply, func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Node.Status(r.Context())
		if err != nil {
			reply(w, http.StatusInternalServerError, ErrorReply{Error: err.Error()})
			return
		}
		if h := state.FindHold(state.ActiveHolds(st.Holds, a.Clock.Now()), state.HoldPause, ""); h != nil {
			answerErr(w, fmt.Errorf("%w: %s", ErrHeld, h.Against("", a.Clock.Now())))
			return
		}
		a.ForceNext()
		poke()
		reply(w, http.StatusAccepted, map[string]string{"result": "the agent checks and stages now; the reboot policy still applies"})
	})
	mux.HandleFunc("POST "+PathCancel, func(w http.ResponseWriter, r *http.Request) {
		var who updater.Actor
		if !readBody(w, r, &who) {
			return
		}
		var res *updater.CancelResult
		err := a.Exclusive(func() (err error) { res, err = ops.Cancel(r.Context(), who); return err })
		if !answerErr(w, err) {
			reply(w, http.StatusOK, res)
		}
	})
	mux.HandleFunc("POST "+PathRollback, func(w http.ResponseWriter, r *http.Request) {
		var who updater.Actor
		if !readBody(w, r, &who) {
			return
		}
		var res *updater.RollbackResult
		err := a.Exclusive(func() (err error) { res, err = ops.Rollback(r.Context(), who); return err })
		if !answerErr(w, err) {
			reply(w, http.StatusOK, res)
		}
	})
	mux.HandleFunc("GET "+PathHolds, func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Node.Status(r.Context())
		if err != nil {
			reply(w, http.StatusInternalServerError, ErrorReply{Error: err.Error()})
			return
		}
		hs := st.Holds
		if hs == nil {
			hs = []state.Hold{}
		}
		reply(w, http.StatusOK, hs)
	})
	mux.HandleFunc("POST "+PathHolds, func(w http.ResponseWriter, r *http.Request) {
		var req updater.HoldRequest
		if !readBody(w, r, &req) {
			return
		}
		var ch *updater.HoldChange
		err := a.ExclusiveWait(r.Context(), func() (err error) { ch, err = ops.SetHold(r.Context(), req); return err })
		if !answerErr(w, err) {
			poke() // the next step honours the hold now, not at the next check
			reply(w, http.StatusOK, ch)
		}
	})
	mux.HandleFunc("DELETE "+PathHolds, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var kind state.HoldKind
		if k := q.Get("kind"); k != "" {
			var err error
			if kind, err = state.ParseHoldKind(k); err != nil {
				answerErr(w, fmt.Errorf("%w: %w", updater.ErrBadInput, err))
				return
			}
		}
		who := updater.Actor{By: q.Get("by"), Reason: q.Get("reason")}
		var gone []state.Hold
		err := a.ExclusiveWait(r.Context(), func() (err error) { gone, err = ops.ClearHolds(r.Context(), kind, q.Get("version"), who); return err })
		if !answerErr(w, err) {
			poke()
			reply(w, http.StatusOK, ClearReply{Cleared: gone})
		}
	})
	mux.HandleFunc("GET "+PathEvents, func(w http.ResponseWriter, r *http.Request) {
		after := uint64(0)
		if v := r.URL.Query().Get("after"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				reply(w, http.StatusBadRequest, ErrorReply{Error: fmt.Sprintf("after=%q is not an event number", v)})
				return
			}
			after = n
		}
		evs, err := ops.Events(r.Context(), after)
		if err != nil {
			reply(w, http.StatusInternalServerError, ErrorReply{Error: err.Error()})
			return
		}
		if evs == nil {
			evs = []state.Event{}
		}
		reply(w, http.StatusOK, evs)
	})
	return mux
}

// ClearReply is DELETE /v1/holds: the holds lifted.
type ClearReply struct {
	Cleared []state.Hold `json:"cleared"`
}

// readBody decodes an optional JSON request body into v; on a bad body it
// answers 400 and returns false.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return true
	}
	reply(w, http.StatusBadRequest, ErrorReply{Error: fmt.Sprintf("request body: %v", err), Code: CodeBadInput})
	return false
}

// answerErr writes the error answer for err, if any, and says so.
func answerErr(w http.ResponseWriter, err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrBusy) {
		reply(w, http.StatusConflict, ErrorReply{Error: err.Error(), Busy: true})
		return true
	}
	for _, c := range codeErrors {
		if errors.Is(err, c.err) {
			reply(w, http.StatusUnprocessableEntity, ErrorReply{Error: err.Error(), Code: c.code})
			return true
		}
	}
	reply(w, http.StatusInternalServerError, ErrorReply{Error: err.Error()})
	return true
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ListenSocket listens on a unix socket only its owner (root) may use:
// the directory is created 0755, a stale socket from a crashed agent is
// replaced, and the socket itself is 0600.
func ListenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another agent is already serving on it", path)
	}
	_ = os.Remove(path)
	// Created 0600 from the start (umask), not chmod-ed after: no window in
	// which another user could connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Client talks to a running agent's local API.
type Client struct {
	hc *http.Client
}

// Dial returns a client for the agent serving on socket, or an error when
// none answers there (the caller then works on the disk itself).
func Dial(socket string) (*Client, error) {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return nil, err
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{hc: &http.Client{Transport: tr}}, nil
}

// call does one request with in, when not nil, as its JSON body; out
// receives the JSON answer.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e ErrorReply
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Busy {
			return fmt.Errorf("agent: %w", ErrBusy)
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error, Code: e.Code}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// APIError is a refusal by the agent.
type APIError struct {
	Status  int
	Message string
	Code    string // ErrorReply.Code
}

func (e *APIError) Error() string { return fmt.Sprintf("agent: %s (HTTP %d)", e.Message, e.Status) }

// Unwrap returns the error the reply's code stands for, if any.
func (e *APIError) Unwrap() error {
	for _, c := range codeErrors {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}

// Status asks the agent for the node's and its own status.
func (c *Client) Status(ctx context.Context) (*StatusReply, error) {
	var r StatusReply
	return &r, c.call(ctx, http.MethodGet, PathStatus, nil, &r)
}

// Check asks the agent to check for a release.
func (c *Client) Check(ctx context.Context) (*updater.CheckResult, error) {
	var r updater.CheckResult
	return &r, c.call(ctx, http.MethodGet, PathCheck, nil, &r)
}

// Apply asks the agent to check and stage now.
func (c *Client) Apply(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, PathApply, nil, nil)
}

// Cancel asks the agent to undo a staged update.
func (c *Client) Cancel(ctx context.Context, a updater.Actor) (*updater.CancelResult, error) {
	var r updater.CancelResult
	return &r, c.call(ctx, http.MethodPost, PathCancel, a, &r)
}

// Rollback asks the agent to boot the other slot next.
func (c *Client) Rollback(ctx context.Context, a updater.Actor) (*updater.RollbackResult, error) {
	var r updater.RollbackResult
	return &r, c.call(ctx, http.MethodPost, PathRollback, a, &r)
}

// Events returns the node's history after event number after.
func (c *Client) Events(ctx context.Context, after uint64) ([]state.Event, error) {
	var evs []state.Event
	return evs, c.call(ctx, http.MethodGet, PathEvents+"?after="+strconv.FormatUint(after, 10), nil, &evs)
}

// Holds returns the holds in force.
func (c *Client) Holds(ctx context.Context) ([]state.Hold, error) {
	var hs []state.Hold
	return hs, c.call(ctx, http.MethodGet, PathHolds, nil, &hs)
}

// SetHold asks the agent to record a hold; it waits while the agent
// changes the disk, until ctx ends.
func (c *Client) SetHold(ctx context.Context, r updater.HoldRequest) (*updater.HoldChange, error) {
	var ch updater.HoldChange
	return &ch, c.call(ctx, http.MethodPost, PathHolds, r, &ch)
}

// ClearHolds asks the agent to lift holds (see Operator.ClearHolds).
func (c *Client) ClearHolds(ctx context.Context, kind state.HoldKind, version string, a updater.Actor) ([]state.Hold, error) {
	q := url.Values{}
	for k, v := range map[string]string{"kind": string(kind), "version": version, "by": a.By, "reason": a.Reason} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var r ClearReply
	return r.Cleared, c.call(ctx, http.MethodDelete, PathHolds+"?"+q.Encode(), nil, &r)
}
