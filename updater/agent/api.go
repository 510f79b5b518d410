package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	Cancel(ctx context.Context) (*state.Pending, error)
	Rollback(ctx context.Context) (bootloader.Slot, error)
	Events(ctx context.Context, after uint64) ([]state.Event, error)
}

// API paths of the local REST API (docs/agent.md).
const (
	PathStatus   = "/v1/status"
	PathCheck    = "/v1/check"
	PathApply    = "/v1/apply"
	PathCancel   = "/v1/cancel"
	PathRollback = "/v1/rollback"
	PathEvents   = "/v1/events"
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
	mux.HandleFunc("POST "+PathApply, func(w http.ResponseWriter, r *http.Request) {
		a.ForceNext()
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
		reply(w, http.StatusAccepted, map[string]string{"result": "the agent checks and stages now; the reboot policy still applies"})
	})
	mux.HandleFunc("POST "+PathCancel, func(w http.ResponseWriter, r *http.Request) {
		var p *state.Pending
		err := a.Exclusive(func() (err error) { p, err = ops.Cancel(r.Context()); return err })
		if !answerErr(w, err) {
			reply(w, http.StatusOK, p)
		}
	})
	mux.HandleFunc("POST "+PathRollback, func(w http.ResponseWriter, r *http.Request) {
		var to bootloader.Slot
		err := a.Exclusive(func() (err error) { to, err = ops.Rollback(r.Context()); return err })
		if !answerErr(w, err) {
			reply(w, http.StatusOK, map[string]string{"next_boot": string(to)})
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

// answerErr writes the error answer for err, if any, and says so.
func answerErr(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrBusy):
		reply(w, http.StatusConflict, ErrorReply{Error: err.Error(), Busy: true})
	case errors.Is(err, updater.ErrNoPending), errors.Is(err, updater.ErrBadInput), errors.Is(err, bootloader.ErrNotBootable):
		reply(w, http.StatusUnprocessableEntity, ErrorReply{Error: err.Error()})
	default:
		reply(w, http.StatusInternalServerError, ErrorReply{Error: err.Error()})
	}
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

// call does one request; out receives the JSON answer.
func (c *Client) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, nil)
	if err != nil {
		return err
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
		return &APIError{Status: resp.StatusCode, Message: e.Error}
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
}

func (e *APIError) Error() string { return fmt.Sprintf("agent: %s (HTTP %d)", e.Message, e.Status) }

// Status asks the agent for the node's and its own status.
func (c *Client) Status(ctx context.Context) (*StatusReply, error) {
	var r StatusReply
	return &r, c.call(ctx, http.MethodGet, PathStatus, &r)
}

// Check asks the agent to check for a release.
func (c *Client) Check(ctx context.Context) (*updater.CheckResult, error) {
	var r updater.CheckResult
	return &r, c.call(ctx, http.MethodGet, PathCheck, &r)
}

// Apply asks the agent to check and stage now.
func (c *Client) Apply(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, PathApply, nil)
}

// Cancel asks the agent to undo a staged update.
func (c *Client) Cancel(ctx context.Context) (*state.Pending, error) {
	var p state.Pending
	return &p, c.call(ctx, http.MethodPost, PathCancel, &p)
}

// Rollback asks the agent to boot the other slot next.
func (c *Client) Rollback(ctx context.Context) (bootloader.Slot, error) {
	var r map[string]string
	err := c.call(ctx, http.MethodPost, PathRollback, &r)
	return bootloader.Slot(r["next_boot"]), err
}

// Events returns the node's history after event number after.
func (c *Client) Events(ctx context.Context, after uint64) ([]state.Event, error) {
	var evs []state.Event
	return evs, c.call(ctx, http.MethodGet, PathEvents+"?after="+strconv.FormatUint(after, 10), &evs)
}
