package oci

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Defaults of RegistryOptions.
const (
	DefaultRetries = 3
	DefaultTimeout = 30 * time.Second
	DefaultBackoff = 500 * time.Millisecond
	// MaxBackoff caps the exponential backoff between attempts.
	MaxBackoff = 30 * time.Second
	// downFor is how long an endpoint that failed with a transport error
	// is tried after the others.
	downFor = time.Minute
)

// RegistryOptions configure a registry Source or Publisher.
type RegistryOptions struct {
	// Repository is "host[:port]/path", e.g. "127.0.0.1:5000/os/node" or
	// "registry.example.com/os/node". The host is required.
	Repository string
	// Mirrors are other repositories with the same content. Each request
	// tries the primary first and then the mirrors in order, moving on
	// after an error (once its retries are spent) or a not-found; an
	// endpoint that failed to answer is tried last for a minute. Publishers
	// ignore mirrors: copying to them is the mirror's job.
	Mirrors []string
	// Insecure allows plain HTTP (tried after HTTPS); otherwise every
	// request, including to token servers and redirects, must be HTTPS.
	Insecure bool
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string
	// Username and Password select basic credentials; when empty the
	// docker config.json (go-containerregistry's DefaultKeychain: $DOCKER_CONFIG,
	// ~/.docker/config.json, credential helpers) is used, and else none.
	Username, Password string
	// Retries is how many times a request is repeated on one endpoint
	// after a timeout, a connection error, a 5xx, 408 or 429 (never after
	// another 4xx); 0 means DefaultRetries, negative means none. A blob
	// download cut off midway resumes with a Range request, up to Retries
	// times in a row without progress.
	Retries int
	// Backoff is the wait before the first retry, doubled for each next
	// one up to MaxBackoff, plus up to 50% jitter; 0 means DefaultBackoff.
	Backoff time.Duration
	// Timeout bounds connecting, the TLS handshake, waiting for response
	// headers and any stall while reading a body (not a whole download);
	// 0 means DefaultTimeout.
	Timeout time.Duration
	// UserAgent is sent with every request; empty means "sealift".
	UserAgent string
}

func (o *RegistryOptions) defaults() {
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.UserAgent == "" {
		o.UserAgent = "sealift"
	}
}

// baseTransport builds the HTTP transport shared by all endpoints: TLS
// roots, timeouts, the HTTPS-only guard and the user agent.
func (o *RegistryOptions) baseTransport() (http.RoundTripper, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oci: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oci: CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   o.Timeout,
		ResponseHeaderTimeout: o.Timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ForceAttemptHTTP2:     true,
		// Blobs are already compressed; asking for gzip would only make
		// Go hide Content-Length and decompress nothing useful.
		DisableCompression: true,
	}
	var rt http.RoundTripper = t
	if !o.Insecure {
		rt = httpsOnly{rt}
	}
	return transport.NewUserAgent(rt, o.UserAgent), nil
}

// httpsOnly refuses plain-HTTP requests. It sits below go-containerregistry's
// scheme selection, which would otherwise fall back to HTTP by itself for
// loopback and RFC 1918 hosts.
type httpsOnly struct{ inner http.RoundTripper }

func (h httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s://%s", ErrPlainHTTP, r.URL.Scheme, r.URL.Host)
	}
	return h.inner.RoundTrip(r)
}

func (o *RegistryOptions) parseRepo(s string) (name.Repository, error) {
	opts := []name.Option{name.StrictValidation}
	if o.Insecure {
		opts = append(opts, name.Insecure)
	}
	if !strings.Contains(s, "/") {
		return name.Repository{}, fmt.Errorf("%w: repository %q must be host/path", ErrInvalidReference, s)
	}
	r, err := name.NewRepository(s, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("%w: repository %q: %w", ErrInvalidReference, s, err)
	}
	// name would take "os/node" as a Docker Hub path; sealift wants the
	// registry spelled out.
	if host := s[:strings.IndexByte(s, '/')]; r.RegistryStr() != host {
		return name.Repository{}, fmt.Errorf("%w: repository %q must start with the registry host", ErrInvalidReference, s)
	}
	return r, nil
}

func (o *RegistryOptions) authFor(repo name.Repository) (authn.Authenticator, error) {
	if o.Username != "" || o.Password != "" {
		return &authn.Basic{Username: o.Username, Password: o.Password}, nil
	}
	a, err := authn.DefaultKeychain.Resolve(repo)
	if err != nil {
		return nil, fmt.Errorf("oci: credentials for %s: %w", repo, err)
	}
	return a, nil
}

// Registry is a Source backed by a registry repository and its mirrors.
type Registry struct {
	o   RegistryOptions
	eps []*endpoint
}

type endpoint struct {
	repo   name.Repository
	auth   authn.Authenticator
	base   http.RoundTripper
	scheme string

	mu sync.Mutex
	rt http.RoundTripper // authenticated, after the first ping

	downUntil atomic.Int64 // unix nanoseconds
}

func (e *endpoint) String() string { return e.repo.String() }

// NewRegistry returns a Source reading from o.Repository and its mirrors.
// It does not contact the registry: the first request does.
func NewRegistry(o RegistryOptions) (*Registry, error) {
	o.defaults()
	base, err := o.baseTransport()
	if err != nil {
		return nil, err
	}
	r := &Registry{o: o}
	for _, s := range append([]string{o.Repository}, o.Mirrors...) {
		repo, err := o.parseRepo(s)
		if err != nil {
			return nil, err
		}
		auth, err := o.authFor(repo)
		if err != nil {
			return nil, err
		}
		scheme := "https"
		if o.Insecure {
			scheme = "http"
		}
		r.eps = append(r.eps, &endpoint{repo: repo, auth: auth, base: base, scheme: scheme})
	}
	return r, nil
}

func (r *Registry) String() string {
	s := "registry:" + r.o.Repository
	if len(r.o.Mirrors) > 0 {
		s += " (mirrors " + strings.Join(r.o.Mirrors, ", ") + ")"
	}
	return s
}

// transport returns the endpoint's authenticated transport, pinging the
// registry the first time (and again after a failed ping).
func (e *endpoint) transport(ctx context.Context) (http.RoundTripper, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rt != nil {
		return e.rt, nil
	}
	rt, err := transport.NewWithContext(ctx, e.repo.Registry, e.auth, e.base, []string{e.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, explainPlainHTTP(err)
	}
	e.rt = rt
	return rt, nil
}

// explainPlainHTTP marks the error Go's client gives when an HTTPS request
// reaches a plain-HTTP server (it has no type to test for) as ErrPlainHTTP,
// which says what to do about it and stops retries.
func explainPlainHTTP(err error) error {
	if err != nil && !errors.Is(err, ErrPlainHTTP) && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%w: %w", ErrPlainHTTP, err)
	}
	return err
}

// StatusError is an HTTP error answer from a registry.
type StatusError struct {
	Method, URL string
	StatusCode  int
	Codes       []string // OCI error codes from the body, e.g. MANIFEST_UNKNOWN
	Message     string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.URL, e.StatusCode)
	if len(e.Codes) > 0 {
		s += " " + strings.Join(e.Codes, ",")
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes errors.Is(err, ErrNotFound) true for a 404 and for the OCI
// "unknown" codes some registries send with other statuses.
func (e *StatusError) Is(target error) bool {
	if target != ErrNotFound {
		return false
	}
	if e.StatusCode == http.StatusNotFound {
		return true
	}
	for _, c := range e.Codes {
		switch c {
		case "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN":
			return true
		}
	}
	return false
}

func (e *StatusError) retryable() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusRequestTimeout || e.StatusCode == http.StatusTooManyRequests
}

func statusError(resp *http.Response) error {
	e := &StatusError{Method: resp.Request.Method, URL: resp.Request.URL.Redacted(), StatusCode: resp.StatusCode}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var oe struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &oe) == nil {
		var msgs []string
		for _, d := range oe.Errors {
			e.Codes = append(e.Codes, d.Code)
			if d.Message != "" {
				msgs = append(msgs, d.Message)
			}
		}
		e.Message = strings.Join(msgs, "; ")
	}
	return e
}

// stallError marks a request cancelled because no byte came for Timeout.
type stallError struct{ d time.Duration }

func (e stallError) Error() string   { return fmt.Sprintf("no data for %s", e.d) }
func (e stallError) Timeout() bool   { return true }
func (e stallError) Temporary() bool { return true }

// retryable reports whether err is worth another attempt on the same
// endpoint: timeouts, connection failures and 5xx/408/429, not TLS trust
// problems, plain-HTTP refusal or other 4xx answers.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.retryable()
	}
	var te *transport.Error // from the ping or the token exchange
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusRequestTimeout || te.StatusCode == http.StatusTooManyRequests
	}
	if errors.Is(err, ErrPlainHTTP) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrDigestMismatch) ||
		errors.Is(err, ErrSizeMismatch) || errors.Is(err, ErrInvalidReference) {
		return false
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &recErr) {
		return false
	}
	var stall stallError
	if errors.As(err, &stall) {
		return true
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// backoff returns the wait before retry number attempt (from 0).
func (r *Registry) backoff(attempt int) time.Duration {
	d := r.o.Backoff << min(attempt, 20)
	if d > MaxBackoff || d <= 0 {
		d = MaxBackoff
	}
	// Jitter only upward, so that a fleet spreads out while each wait is
	// still at least the documented one.
	return d + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// order lists the endpoints to try: those not recently down first, each
// group in configured order.
func (r *Registry) order() []*endpoint {
	now := time.Now().UnixNano()
	var up, down []*endpoint
	for _, e := range r.eps {
		if e.downUntil.Load() > now {
			down = append(down, e)
		} else {
			up = append(up, e)
		}
	}
	return append(up, down...)
}

// try runs op on each endpoint in turn, with retries, until one succeeds.
// If none does, the error wraps every endpoint's error; it is a not-found
// error if any endpoint said so (a definite answer beats a failure).
func (r *Registry) try(ctx context.Context, op func(ctx context.Context, e *endpoint) error) error {
	var errs []error
	for _, e := range r.order() {
		err := r.retry(ctx, e, op)
		if err == nil {
			e.downUntil.Store(0)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if retryable(err) {
			e.downUntil.Store(time.Now().Add(downFor).UnixNano())
		}
		errs = append(errs, fmt.Errorf("%s: %w", e, err))
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

func (r *Registry) retry(ctx context.Context, e *endpoint, op func(ctx context.Context, e *endpoint) error) error {
	for attempt := 0; ; attempt++ {
		err := op(ctx, e)
		if err == nil || attempt >= r.o.Retries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if serr := sleep(ctx, r.backoff(attempt)); serr != nil {
			return err
		}
	}
}

// get sends one GET for path below the endpoint's /v2/<repo>/. On a 2xx
// answer the caller owns the body, read under the stall timeout; other
// answers become a *StatusError.
func (r *Registry) get(ctx context.Context, e *endpoint, path, accept, rangeHdr string) (*http.Response, error) {
	rt, err := e.transport(ctx)
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("%s://%s/v2/%s/%s", e.scheme, e.repo.RegistryStr(), e.repo.RepositoryStr(), path)
	rctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		cancel(nil)
		return nil, explainPlainHTTP(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer cancel(nil)
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	resp.Body = newStallBody(resp.Body, r.o.Timeout, cancel)
	return resp, nil
}

// stallBody cancels its request when no byte arrives for d, and turns the
// resulting cancellation into a retryable stallError.
type stallBody struct {
	r       io.ReadCloser
	d       time.Duration
	timer   *time.Timer
	cancel  context.CancelCauseFunc
	stalled atomic.Bool
}

func newStallBody(r io.ReadCloser, d time.Duration, cancel context.CancelCauseFunc) *stallBody {
	b := &stallBody{r: r, d: d, cancel: cancel}
	b.timer = time.AfterFunc(d, func() {
		b.stalled.Store(true)
		cancel(stallError{d})
	})
	return b
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.timer.Reset(b.d)
	}
	if err != nil && !errors.Is(err, io.EOF) && b.stalled.Load() {
		err = stallError{b.d}
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	err := b.r.Close()
	b.cancel(nil)
	return err
}

// manifestAccept lists what Manifest accepts. Distribution 2.8 serves an
// OCI manifest only to a client that names its type.
var manifestAccept = strings.Join([]string{
	MediaTypeImageManifest,
	MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// Manifest implements Source.
func (r *Registry) Manifest(ctx context.Context, ref string, maxSize int64) ([]byte, error) {
	if err := checkRef(ref); err != nil {
		return nil, err
	}
	var out []byte
	err := r.try(ctx, func(ctx context.Context, e *endpoint) error {
		resp, err := r.get(ctx, e, "manifests/"+ref, manifestAccept, "")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.ContentLength > maxSize {
			return fmt.Errorf("%w: manifest %s is %d bytes, limit %d", ErrTooLarge, ref, resp.ContentLength, maxSize)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxSize+1))
		if err != nil {
			return fmt.Errorf("read manifest %s: %w", ref, err)
		}
		if int64(len(b)) > maxSize {
			return fmt.Errorf("%w: manifest %s is larger than %d bytes", ErrTooLarge, ref, maxSize)
		}
		if isDigest(ref) {
			if got := digestOf(b); got != ref {
				return fmt.Errorf("%w: manifest %s hashes to %s", ErrDigestMismatch, ref, got)
			}
		}
		out = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("oci: manifest %s: %w", ref, err)
	}
	return out, nil
}

// Blob implements Source. A download that breaks off resumes where it
// stopped with a Range request (or, if the registry ignores Range, by
// skipping what was already read).
func (r *Registry) Blob(ctx context.Context, digest string, size int64) (io.ReadCloser, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	b := &resumingBlob{r: r, ctx: ctx, digest: digest, size: size}
	err := r.try(ctx, func(ctx context.Context, e *endpoint) error {
		resp, err := r.get(ctx, e, "blobs/"+digest, "", "")
		if err != nil {
			return err
		}
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			resp.Body.Close()
			return fmt.Errorf("%w: blob %s is %d bytes, expected %d", ErrSizeMismatch, digest, resp.ContentLength, size)
		}
		b.ep, b.body = e, resp.Body
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("oci: blob %s: %w", digest, err)
	}
	return newSizedReader(b, size, "blob "+digest), nil
}

// resumingBlob reads a blob body and reopens it from the current offset
// when the connection fails midway.
type resumingBlob struct {
	r      *Registry
	ctx    context.Context
	ep     *endpoint
	digest string
	size   int64
	n      int64
	body   io.ReadCloser
	fails  int // consecutive failed attempts without progress
}

func (b *resumingBlob) Read(p []byte) (int, error) {
	for {
		var n int
		var err error
		if b.body == nil {
			err = b.reopen()
		}
		if err == nil {
			n, err = b.body.Read(p)
			b.n += int64(n)
			if n > 0 {
				b.fails = 0
			}
			if err == nil || (errors.Is(err, io.EOF) && b.n >= b.size) {
				return n, err
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			b.body.Close()
			b.body = nil
		}
		if !retryable(err) || b.ctx.Err() != nil || b.fails >= b.r.o.Retries {
			return n, err
		}
		if n > 0 {
			return n, nil // resume on the next Read
		}
		if serr := sleep(b.ctx, b.r.backoff(b.fails)); serr != nil {
			return 0, err
		}
		b.fails++
	}
}

// reopen asks the same endpoint for the rest of the blob.
func (b *resumingBlob) reopen() error {
	// Both ends spelled out: some registries (go-containerregistry's)
	// refuse the open-ended form.
	rng := "bytes=" + strconv.FormatInt(b.n, 10) + "-" + strconv.FormatInt(b.size-1, 10)
	resp, err := b.r.get(b.ctx, b.ep, "blobs/"+b.digest, "", rng)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		var start int64 = -1
		fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start)
		if start != b.n {
			resp.Body.Close()
			return fmt.Errorf("oci: blob %s: resumed at %d, asked for %d", b.digest, start, b.n)
		}
	case http.StatusOK:
		// Range ignored: skip what was read already.
		if _, err := io.CopyN(io.Discard, resp.Body, b.n); err != nil {
			resp.Body.Close()
			return err
		}
	default:
		resp.Body.Close()
		return fmt.Errorf("oci: blob %s: unexpected HTTP %d on resume", b.digest, resp.StatusCode)
	}
	b.body = resp.Body
	return nil
}

func (b *resumingBlob) Close() error {
	if b.body != nil {
		return b.body.Close()
	}
	return nil
}
