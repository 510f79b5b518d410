package oci_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sealift/updater/oci"
	"sealift/updater/oci/registrytest"
	"sealift/updater/release"
)

// fault intercepts requests whose path contains match; act returns true
// when it answered the request itself. n counts matching requests from 1.
type fault struct {
	match string
	act   func(w http.ResponseWriter, r *http.Request, n int) bool

	mu    sync.Mutex
	times []time.Time
	reqs  []*http.Request
}

func (f *fault) hits() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times...)
}

// faultServer serves an in-process registry on 127.0.0.1 through the
// faults, and returns its host.
func faultServer(t *testing.T, inner http.Handler, faults ...*fault) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, f := range faults {
			if !strings.Contains(r.URL.Path, f.match) || r.Method != http.MethodGet {
				continue
			}
			f.mu.Lock()
			f.times = append(f.times, time.Now())
			f.reqs = append(f.reqs, r.Clone(context.Background()))
			n := len(f.times)
			f.mu.Unlock()
			if f.act(w, r, n) {
				return
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// status answers with code for the first n matching requests.
func status(code, n int) func(w http.ResponseWriter, r *http.Request, k int) bool {
	return func(w http.ResponseWriter, r *http.Request, k int) bool {
		if k > n {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected %d"}]}`, code)
		return true
	}
}

// seeded returns an in-process registry handler holding rel as tag 1.0.0.
func seeded(t *testing.T, rel *testRelease) http.Handler {
	t.Helper()
	h := registrytest.Handler()
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, pub := registryPair(t, oci.RegistryOptions{Repository: strings.TrimPrefix(srv.URL, "http://") + "/" + testRepo, Insecure: true})
	if _, _, err := pub.PushImage(context.Background(), rel.img, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	return h
}

func deadHost(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	return host
}

func fastOpts(repo string, mirrors ...string) oci.RegistryOptions {
	o := oci.RegistryOptions{Repository: repo, Mirrors: mirrors, Insecure: true, Retries: 2, Backoff: time.Millisecond, Timeout: 5 * time.Second}
	return o
}

func TestMirrors(t *testing.T) {
	rel := buildRelease(t, 3*4096, 4096, 10)
	good := func(t *testing.T) string { return faultServer(t, seeded(t, rel)) }
	empty := func(t *testing.T) string { return faultServer(t, registrytest.Handler()) }
	tests := []struct {
		name    string
		primary func(t *testing.T) string
		mirrors []func(t *testing.T) string
		wantErr error // nil: the release reads back
	}{
		{"primary down, mirror used", deadHost, []func(*testing.T) string{good}, nil},
		{"primary 500s, mirror used", func(t *testing.T) string {
			return faultServer(t, seeded(t, rel), &fault{match: "/" + testRepo + "/", act: status(500, 1000)})
		}, []func(*testing.T) string{good}, nil},
		{"first mirror down too, second used", deadHost, []func(*testing.T) string{deadHost, good}, nil},
		{"primary lacks it, mirror has it", empty, []func(*testing.T) string{good}, nil},
		{"nobody has it", empty, []func(*testing.T) string{empty}, oci.ErrNotFound},
		{"primary says not found, mirror down", empty, []func(*testing.T) string{deadHost}, oci.ErrNotFound},
		{"everything down", deadHost, []func(*testing.T) string{deadHost}, errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mirrors []string
			for _, m := range tc.mirrors {
				mirrors = append(mirrors, m(t)+"/"+testRepo)
			}
			src, err := oci.NewRegistry(fastOpts(tc.primary(t)+"/"+testRepo, mirrors...))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			m, err := src.Manifest(ctx, "1.0.0", 1<<20)
			if tc.wantErr != nil {
				if err == nil || (tc.wantErr != errAny && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("Manifest: %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(m, rel.manifest) {
				t.Fatalf("Manifest: %v", err)
			}
			r, err := release.Fetch(ctx, m, src)
			if err != nil {
				t.Fatal(err)
			}
			rc := r.RootReader(ctx, src)
			defer rc.Close()
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, rel.image) {
				t.Fatalf("RootReader: %v", err)
			}
		})
	}
}

var errAny = errors.New("any error")

// TestRetries checks which answers are retried, how often, and that the
// waits grow.
func TestRetries(t *testing.T) {
	rel := buildRelease(t, 2*4096, 4096, 11)
	const backoff = 40 * time.Millisecond
	tests := []struct {
		name     string
		code     int
		failures int
		match    string
		wantHits int
		wantErr  bool
	}{
		{"manifest 503 twice then OK", 503, 2, "/manifests/", 3, false},
		{"blob 503 twice then OK", 503, 2, "/blobs/", 3, false},
		{"429 is retried", 429, 1, "/manifests/", 2, false},
		{"502 beyond the retries fails", 502, 100, "/manifests/", 4, true},
		{"403 is not retried", 403, 100, "/manifests/", 1, true},
		{"401 is not retried", 401, 100, "/manifests/", 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fault{match: tc.match, act: status(tc.code, tc.failures)}
			host := faultServer(t, seeded(t, rel), f)
			o := fastOpts(host + "/" + testRepo)
			o.Retries, o.Backoff = 3, backoff
			src, err := oci.NewRegistry(o)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var got []byte
			if tc.match == "/blobs/" {
				r, ferr := release.Fetch(ctx, rel.manifest, src) // fetches the config blob
				err = ferr
				if err == nil {
					got = r.Manifest
				}
			} else {
				got, err = src.Manifest(ctx, "1.0.0", 1<<20)
			}
			if tc.wantErr != (err != nil) {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !bytes.Equal(got, rel.manifest) {
				t.Fatal("wrong manifest")
			}
			hits := f.hits()
			if len(hits) != tc.wantHits {
				t.Fatalf("%d requests, want %d", len(hits), tc.wantHits)
			}
			// Lower bounds only: a slow machine may wait longer, never less.
			for i := 1; i < len(hits); i++ {
				if gap, min := hits[i].Sub(hits[i-1]), backoff<<(i-1); gap < min {
					t.Errorf("wait before attempt %d was %v, want at least %v", i+1, gap, min)
				}
			}
		})
	}
}

// TestBlobResume cuts a blob download midway and checks the reader picks
// up where it stopped, with Range or by skipping.
func TestBlobResume(t *testing.T) {
	rel := buildRelease(t, 64<<10, 64<<10, 12)
	ls := mustLayoutSource(t, rel)
	r, _ := release.Fetch(context.Background(), rel.manifest, ls)
	blob := r.Chunks[0].Blob
	data := readAllBlob(t, ls, blob.Digest, blob.Size)
	tests := []struct {
		name        string
		act         func(w http.ResponseWriter, r *http.Request, n int) bool
		wantRanges  int
		timeout     time.Duration
		wantFailure bool
	}{
		{"connection dropped, resumed with Range", func(w http.ResponseWriter, r *http.Request, n int) bool {
			if n > 1 {
				return false
			}
			cut(w, r, data)
			return true
		}, 1, 5 * time.Second, false},
		{"dropped twice", func(w http.ResponseWriter, r *http.Request, n int) bool {
			if n > 2 {
				return false
			}
			cut(w, r, data)
			return true
		}, 2, 5 * time.Second, false},
		{"registry ignores Range", func(w http.ResponseWriter, r *http.Request, n int) bool {
			if n == 1 {
				cut(w, r, data)
				return true
			}
			r.Header.Del("Range")
			return false
		}, 1, 5 * time.Second, false},
		{"stalled body times out and resumes", func(w http.ResponseWriter, r *http.Request, n int) bool {
			if n > 1 {
				return false
			}
			w.Header().Set("Content-Length", fmt.Sprint(blob.Size))
			w.WriteHeader(200)
			w.Write(data[:100])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return true
		}, 1, 500 * time.Millisecond, false},
		{"always dropped: gives up", func(w http.ResponseWriter, r *http.Request, n int) bool {
			cut(w, r, data)
			return true
		}, 2, 5 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fault{match: "/blobs/" + blob.Digest, act: tc.act}
			host := faultServer(t, seeded(t, rel), f)
			o := fastOpts(host + "/" + testRepo)
			o.Timeout = tc.timeout
			src, err := oci.NewRegistry(o)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := src.Blob(context.Background(), blob.Digest, blob.Size)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if tc.wantFailure {
				if err == nil {
					t.Fatal("an always-failing download succeeded")
				}
				return
			}
			if err != nil || sha(got) != blob.Digest {
				t.Fatalf("blob: %v (%d bytes)", err, len(got))
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			ranges := 0
			for _, r := range f.reqs {
				if r.Header.Get("Range") != "" {
					ranges++
				}
			}
			if ranges != tc.wantRanges && !strings.Contains(tc.name, "ignores") {
				t.Errorf("%d Range requests, want %d", ranges, tc.wantRanges)
			}
		})
	}
}

// cut answers a blob request with its full length declared but only part
// of the bytes, then drops the connection.
func cut(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(200)
	w.Write(data[:len(data)/3])
	w.(http.Flusher).Flush()
	if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
		conn.Close()
	}
}

func mustLayoutSource(t *testing.T, rel *testRelease) oci.Source {
	dir := t.TempDir()
	if err := release.WriteLayout(dir, rel.img, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	src, err := oci.NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestDigestMismatchFallsBackToMirror(t *testing.T) {
	rel := buildRelease(t, 4096, 4096, 13)
	liar := &fault{match: "/manifests/", act: func(w http.ResponseWriter, r *http.Request, n int) bool {
		w.Header().Set("Content-Type", oci.MediaTypeImageManifest)
		w.Write(bytes.Replace(rel.manifest, []byte("1.0.0"), []byte("6.6.6"), 1))
		return true
	}}
	bad := faultServer(t, seeded(t, rel), liar)
	good := faultServer(t, seeded(t, rel))
	for _, mirrors := range [][]string{nil, {good + "/" + testRepo}} {
		src, _ := oci.NewRegistry(fastOpts(bad+"/"+testRepo, mirrors...))
		m, err := src.Manifest(context.Background(), rel.digest, 1<<20)
		if mirrors == nil {
			if !errors.Is(err, oci.ErrDigestMismatch) {
				t.Errorf("lying registry alone: %v", err)
			}
		} else if err != nil || !bytes.Equal(m, rel.manifest) {
			t.Errorf("with a good mirror: %v", err)
		}
	}
}

// basicAuth answers 401 with a Basic challenge unless the request carries
// user:pass.
func basicAuth(user, pass string, inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="sealift-test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	})
}

func TestBasicAuth(t *testing.T) {
	rel := buildRelease(t, 4096, 4096, 14)
	srv := httptest.NewServer(basicAuth("node", "s3cret", registrytest.Handler()))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	repo := host + "/" + testRepo
	// An empty docker config, so that the machine's own never answers.
	t.Setenv("DOCKER_CONFIG", t.TempDir())

	_, pub := registryPair(t, oci.RegistryOptions{Repository: repo, Insecure: true, Username: "node", Password: "s3cret"})
	if _, _, err := pub.PushImage(context.Background(), rel.img, "1.0.0"); err != nil {
		t.Fatalf("push with credentials: %v", err)
	}
	dockerCfg := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("node:s3cret"))
	os.WriteFile(filepath.Join(dockerCfg, "config.json"), []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600)
	tests := []struct {
		name      string
		user      string
		pass      string
		dockerCfg bool
		ok        bool
	}{
		{"right credentials", "node", "s3cret", false, true},
		{"docker config.json", "", "", true, true},
		{"wrong password", "node", "guess", false, false},
		{"anonymous", "", "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.dockerCfg {
				t.Setenv("DOCKER_CONFIG", dockerCfg)
			}
			o := fastOpts(repo)
			o.Username, o.Password = tc.user, tc.pass
			src, err := oci.NewRegistry(o)
			if err != nil {
				t.Fatal(err)
			}
			m, err := src.Manifest(context.Background(), "1.0.0", 1<<20)
			if tc.ok && (err != nil || !bytes.Equal(m, rel.manifest)) {
				t.Fatalf("Manifest: %v", err)
			}
			if !tc.ok {
				var se *oci.StatusError
				if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
					t.Fatalf("Manifest: %v, want HTTP 401", err)
				}
			}
		})
	}
}

func TestPlainHTTPRefusedUnlessInsecure(t *testing.T) {
	rel := buildRelease(t, 4096, 4096, 15)
	host, _ := registrytest.InProcess(t)
	repo := host + "/" + testRepo
	ctx := context.Background()
	for _, insecure := range []bool{false, true} {
		t.Run(fmt.Sprintf("insecure=%v", insecure), func(t *testing.T) {
			o := fastOpts(repo)
			o.Insecure = insecure
			src, pub := registryPair(t, o)
			_, _, perr := pub.PushImage(ctx, rel.img, "1.0.0")
			_, merr := src.Manifest(ctx, "1.0.0", 1<<20)
			if insecure {
				if perr != nil || merr != nil {
					t.Fatalf("push %v, manifest %v", perr, merr)
				}
				return
			}
			if !errors.Is(perr, oci.ErrPlainHTTP) || !errors.Is(merr, oci.ErrPlainHTTP) {
				t.Fatalf("push %v, manifest %v: want ErrPlainHTTP", perr, merr)
			}
		})
	}
}

func TestCustomCA(t *testing.T) {
	rel := buildRelease(t, 4096, 4096, 16)
	srv := httptest.NewUnstartedServer(registrytest.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	repo := strings.TrimPrefix(srv.URL, "https://") + "/" + testRepo
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Run("trusted with CAFile", func(t *testing.T) {
		o := oci.RegistryOptions{Repository: repo, CAFile: caFile, Retries: -1}
		src, pub := registryPair(t, o)
		if _, _, err := pub.PushImage(ctx, rel.img, "1.0.0"); err != nil {
			t.Fatalf("push: %v", err)
		}
		if m, err := src.Manifest(ctx, "1.0.0", 1<<20); err != nil || !bytes.Equal(m, rel.manifest) {
			t.Fatalf("manifest: %v", err)
		}
	})
	t.Run("rejected without it", func(t *testing.T) {
		o := oci.RegistryOptions{Repository: repo, Retries: 3, Backoff: 3 * time.Second}
		src, pub := registryPair(t, o)
		start := time.Now()
		_, err := src.Manifest(ctx, "1.0.0", 1<<20)
		var ua x509.UnknownAuthorityError
		var cv *tls.CertificateVerificationError
		if !errors.As(err, &ua) && !errors.As(err, &cv) {
			t.Fatalf("manifest: %v, want an unknown-authority error", err)
		}
		if time.Since(start) > 2900*time.Millisecond {
			t.Errorf("a certificate error was retried")
		}
		if _, _, err := pub.PushImage(ctx, rel.img, "x"); err == nil {
			t.Fatal("push to an untrusted registry succeeded")
		}
	})
	t.Run("CA file without certificates", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.pem")
		os.WriteFile(bad, []byte("not a certificate"), 0o644)
		if _, err := oci.NewRegistry(oci.RegistryOptions{Repository: repo, CAFile: bad}); err == nil {
			t.Fatal("accepted")
		}
	})
}
