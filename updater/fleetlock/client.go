package fleetlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors of Client and AdminClient, for errors.Is. Every error means the
// operation did not happen as far as the caller may assume: only a 200
// answer grants or releases a slot.
var (
	// ErrLockDenied: the server answered that all slots of the group are
	// held. Try again later.
	ErrLockDenied = errors.New("no reboot slot available")
	// ErrServerError: the server answered 5xx, e.g. its lock store is
	// unreachable. Try again later.
	ErrServerError = errors.New("lock server failed")
	// ErrRejected: the server answered something other than 200 that is
	// neither of the above (a 4xx, a redirect): the request or the
	// configuration is wrong, and retrying it unchanged will not help.
	ErrRejected = errors.New("lock server rejected the request")
	// ErrTransport: no answer (connection refused, timeout, TLS failure).
	ErrTransport = errors.New("lock server not reachable")
	// ErrInvalid: the client's own parameters are invalid; nothing was sent.
	ErrInvalid = errors.New("invalid FleetLock parameters")
	// ErrNotHeld: an admin release named an id that holds no slot.
	ErrNotHeld = errors.New("not a holder")
)

// ServerError is a non-200 answer. It matches ErrLockDenied,
// ErrServerError, ErrRejected or ErrNotHeld with errors.Is.
type ServerError struct {
	Op     string // "pre-reboot", "steady-state", "status", "release"
	Status int    // HTTP status code
	Kind   string // the body's kind, "" when the body was not a protocol error
	Value  string // the body's value, or the start of a non-protocol body
}

func (e *ServerError) Error() string {
	msg := fmt.Sprintf("fleetlock %s: HTTP %d", e.Op, e.Status)
	if e.Kind != "" {
		msg += " " + e.Kind
	}
	if e.Value != "" {
		msg += ": " + e.Value
	}
	return msg
}

// Unwrap returns the class of the error.
func (e *ServerError) Unwrap() error {
	switch {
	case e.Kind == KindSemaphoreFull:
		return ErrLockDenied
	case e.Kind == KindNotHeld && e.Status == http.StatusNotFound:
		return ErrNotHeld
	case e.Status >= 500:
		return ErrServerError
	}
	return ErrRejected
}

// DefaultTimeout bounds one request when the caller's context does not
// end sooner.
const DefaultTimeout = 30 * time.Second

// Client takes and releases a reboot slot for one node.
type Client struct {
	// BaseURL is the server's FleetLock base; the endpoints are
	// BaseURL/v1/pre-reboot and BaseURL/v1/steady-state. A base without a
	// trailing slash is taken as a directory all the same.
	BaseURL string
	// Group is the node's reboot group (DefaultGroup when empty).
	Group string
	// ID identifies the node (see NodeID).
	ID string
	// HTTPClient sends the requests; nil means one that follows no
	// redirects (a redirect answers the request, and is not a grant).
	HTTPClient *http.Client
	// Timeout bounds each request; DefaultTimeout when 0.
	Timeout time.Duration
}

// PreReboot takes a reboot slot (or confirms the one the node holds).
// nil means the server answered 200: the node may reboot.
func (c *Client) PreReboot(ctx context.Context) error {
	return c.do(ctx, "pre-reboot", PathPreReboot)
}

// SteadyState releases the node's reboot slot; nil means the server
// answered 200 (released, or the node held none).
func (c *Client) SteadyState(ctx context.Context) error {
	return c.do(ctx, "steady-state", PathSteadyState)
}

func (c *Client) do(ctx context.Context, op, path string) error {
	group := c.Group
	if group == "" {
		group = DefaultGroup
	}
	if err := ValidGroup(group); err != nil {
		return fmt.Errorf("fleetlock %s: %w: %w", op, ErrInvalid, err)
	}
	if err := ValidID(c.ID); err != nil {
		return fmt.Errorf("fleetlock %s: %w: %w", op, ErrInvalid, err)
	}
	body, err := json.Marshal(lockRequest{ClientParams: &clientParams{ID: c.ID, Group: group}})
	if err != nil {
		return err
	}
	resp, err := send(ctx, c.HTTPClient, c.Timeout, c.BaseURL, http.MethodPost, path, nil, body, func(h http.Header) {
		h.Set(ProtocolHeader, "true")
		h.Set("Content-Type", "application/json")
	})
	if err != nil {
		return fmt.Errorf("fleetlock %s: %w", op, err)
	}
	defer resp.Body.Close()
	return answer(op, resp, nil)
}

// endpoint joins a base URL, an absolute endpoint path and a query.
func endpoint(base, path string, q url.Values) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("%w: server URL %q: %w", ErrInvalid, base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("%w: server URL %q: want http(s)://HOST[:PORT][/BASE]", ErrInvalid, base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = q.Encode()
	return u.String(), nil
}

var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// send makes one request bounded by timeout; an error is ErrInvalid or
// ErrTransport.
func send(ctx context.Context, hc *http.Client, timeout time.Duration, base, method, path string, q url.Values, body []byte, hdr func(http.Header)) (*http.Response, error) {
	u, err := endpoint(base, path, q)
	if err != nil {
		return nil, err
	}
	if hc == nil {
		hc = noRedirects
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if hdr != nil {
		hdr(req.Header)
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrTransport, err)
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// answer turns a response into nil (200, body decoded into out when
// given) or a *ServerError.
func answer(op string, resp *http.Response, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode == http.StatusOK {
		if err != nil {
			return fmt.Errorf("fleetlock %s: %w: reading the answer: %w", op, ErrTransport, err)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				return fmt.Errorf("fleetlock %s: unreadable answer: %w", op, err)
			}
		}
		return nil
	}
	se := &ServerError{Op: op, Status: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Kind != "" {
		se.Kind, se.Value = eb.Kind, eb.Value
	} else {
		v := strings.TrimSpace(string(b))
		if len(v) > 200 {
			v = v[:200] + "…"
		}
		se.Value = v
	}
	return se
}

// AdminClient talks to a server's operator API (Server.AdminHandler).
type AdminClient struct {
	// BaseURL is where the admin handler is served, e.g.
	// http://127.0.0.1:8471.
	BaseURL string
	// HTTPClient and Timeout as for Client.
	HTTPClient *http.Client
	Timeout    time.Duration
}

// Status returns the holders of every group, or of group when not empty.
func (a *AdminClient) Status(ctx context.Context, group string) (*Status, error) {
	var q url.Values
	if group != "" {
		if err := ValidGroup(group); err != nil {
			return nil, fmt.Errorf("fleetlock status: %w: %w", ErrInvalid, err)
		}
		q = url.Values{"group": {group}}
	}
	resp, err := send(ctx, a.HTTPClient, a.Timeout, a.BaseURL, http.MethodGet, AdminPathStatus, q, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("fleetlock status: %w", err)
	}
	defer resp.Body.Close()
	var st Status
	if err := answer("status", resp, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Release frees the slot id holds in group; ErrNotHeld when it holds none.
func (a *AdminClient) Release(ctx context.Context, group, id string) error {
	if err := ValidGroup(group); err != nil {
		return fmt.Errorf("fleetlock release: %w: %w", ErrInvalid, err)
	}
	if err := ValidID(id); err != nil {
		return fmt.Errorf("fleetlock release: %w: %w", ErrInvalid, err)
	}
	body, err := json.Marshal(releaseRequest{Group: group, ID: id})
	if err != nil {
		return err
	}
	resp, err := send(ctx, a.HTTPClient, a.Timeout, a.BaseURL, http.MethodPost, AdminPathRelease, nil, body, func(h http.Header) {
		h.Set("Content-Type", "application/json")
	})
	if err != nil {
		return fmt.Errorf("fleetlock release: %w", err)
	}
	defer resp.Body.Close()
	return answer("release", resp, nil)
}
