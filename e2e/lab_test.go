//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lab is a network namespace with only its loopback up, in which a test
// runs the servers a node talks to (registry, etcd, FleetLock) and the
// node's qemu. qemu's user-mode network maps the guest's gateway 10.0.2.2
// to the namespace's 127.0.0.1, and the namespace has no other interface,
// so nothing the guest or the servers send can leave it.
type lab struct {
	t   *testing.T
	dir string
	ns  string // /proc/PID/ns/net of the namespace's holder process

	mu    sync.Mutex
	procs []*labProc
	// control is the guest's control channel (startControl).
	control *control
}

type labProc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// Ports inside the namespace; the guest reaches them at 10.0.2.2.
const (
	labRegistryPort  = 5000
	labEtcdPort      = 2379
	labFleetLockPort = 8470
	labFleetAdmin    = 8471
	labControlPort   = 8472
)

// newLab creates the namespace. Everything it started is stopped when the
// test ends.
func newLab(t *testing.T, dir string) *lab {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the node scenarios need root for a network namespace (unshare -n)")
	}
	ip, err := findTool("ip", "iproute2")
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, dir: dir}
	holder := exec.Command("unshare", "--net", "--", "sh", "-c", ip+" link set lo up && echo up && exec sleep infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare --net: %v", err)
	}
	t.Cleanup(func() {
		l.stopAll()
		_ = syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		_ = holder.Wait()
	})
	buf := make([]byte, 3)
	if _, err := out.Read(buf); err != nil || string(buf) != "up\n" {
		t.Fatalf("network namespace: lo did not come up (%q, %v)", buf, err)
	}
	l.ns = fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	// The namespace must have nothing but lo: the guarantee that nothing
	// leaves it.
	links, err := exec.Command("nsenter", "--net="+l.ns, "--", ip, "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip link in the namespace: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(links)), "\n") {
		if f := strings.Fields(line); len(f) < 2 || f[1] != "lo:" {
			t.Fatalf("the lab namespace has an interface other than lo: %s", line)
		}
	}
	return l
}

// command is a command that runs inside the namespace.
func (l *lab) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--net=" + l.ns, "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// start runs a server inside the namespace, its output in dir/NAME.log,
// and waits until ready returns nil.
func (l *lab) start(name string, ready func() error, bin string, args ...string) {
	l.t.Helper()
	logPath := filepath.Join(l.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := l.command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start %s: %v", name, err)
	}
	p := &labProc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.exited) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.exited:
			b, _ := os.ReadFile(logPath)
			l.t.Fatalf("%s exited at start:\n%s", name, b)
		default:
		}
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			l.t.Fatalf("%s not ready after 60s: %v\n%s", name, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *lab) stopAll() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
}

// inNS runs fn on an OS thread that has joined the namespace; sockets fn
// creates belong to the namespace for their whole life. The thread goes
// back to the test's namespace afterwards: were it to end instead, the
// children started from it would get their Pdeathsig.
func (l *lab) inNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		f, err := os.Open(l.ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		err = fn()
		// A thread that cannot go back stays locked and ends with
		// this goroutine.
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// httpClient talks to servers inside the namespace.
func (l *lab) httpClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = l.inNS(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// httpOK is a readiness check: GET url inside the namespace answers 200.
func (l *lab) httpOK(url string) func() error {
	c := l.httpClient()
	return func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// startRegistry runs Debian's docker-registry (Distribution 2.8) on the
// namespace's 127.0.0.1:5000.
func (l *lab) startRegistry() {
	l.t.Helper()
	bin, err := findTool("docker-registry", "docker-registry")
	if err != nil {
		l.t.Fatal(err)
	}
	cfg := filepath.Join(l.dir, "registry.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: 127.0.0.1:%d
  secret: sealift-e2e
`, filepath.Join(l.dir, "registry"), labRegistryPort)), 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.start("registry", l.httpOK(fmt.Sprintf("http://127.0.0.1:%d/v2/", labRegistryPort)), bin, "serve", cfg)
}

// startEtcd runs etcd on the namespace's 127.0.0.1:2379.
func (l *lab) startEtcd() {
	l.t.Helper()
	bin, err := findTool("etcd", "etcd-server")
	if err != nil {
		l.t.Fatal(err)
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", labEtcdPort)
	peer := "http://127.0.0.1:2380"
	l.start("etcd", l.httpOK(client+"/health"), bin,
		"--name", "e2e", "--data-dir", filepath.Join(l.dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "e2e="+peer, "--log-level", "warn")
}

// startFleetLock runs 'sealift fleetlock serve' with the etcd store: one
// reboot slot per group, the protocol on 127.0.0.1:8470 and the operator
// API on 127.0.0.1:8471.
func (l *lab) startFleetLock(sealift string) {
	l.t.Helper()
	admin := fmt.Sprintf("http://127.0.0.1:%d", labFleetAdmin)
	l.start("fleetlock", l.httpOK(admin+"/admin/v1/status"), sealift, "fleetlock", "serve",
		"--store", "etcd", "--etcd-endpoints", fmt.Sprintf("http://127.0.0.1:%d", labEtcdPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", labFleetLockPort), "--admin-listen", fmt.Sprintf("127.0.0.1:%d", labFleetAdmin),
		"--log-format", "text")
}

// control is the test's control server for the guest (its
// e2e-control.service polls GET /control): the time to set the guest's
// clock to, once it changes, and whether to power off now. Both are reset
// at the start of every boot (bootOnce).
type control struct {
	mu       sync.Mutex
	clock    string
	poweroff bool
}

// setClock has the guest set its clock to t.
func (c *control) setClock(t time.Time) {
	c.mu.Lock()
	c.clock = t.UTC().Format("2006-01-02 15:04:05")
	c.mu.Unlock()
}

// powerOff has the guest shut down cleanly (systemctl poweroff), as an
// operator would: a minimal node has no logind to act on the ACPI button.
func (c *control) powerOff() {
	c.mu.Lock()
	c.poweroff = true
	c.mu.Unlock()
}

func (c *control) reset() {
	c.mu.Lock()
	c.clock, c.poweroff = "", false
	c.mu.Unlock()
}

func (c *control) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clock != "" {
		fmt.Fprintf(w, "clock=%s\n", c.clock)
	}
	if c.poweroff {
		fmt.Fprintln(w, "poweroff=1")
	}
}

// startControl serves the control on the namespace's 127.0.0.1:8472.
func (l *lab) startControl() {
	l.t.Helper()
	var ln net.Listener
	if err := l.inNS(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", labControlPort))
		return err
	}); err != nil {
		l.t.Fatalf("control server: %v", err)
	}
	l.control = &control{}
	srv := &http.Server{Handler: l.control, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	l.t.Cleanup(func() { srv.Close() })
}
