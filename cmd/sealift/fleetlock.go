package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/grpclog"

	"sealift/updater/fleetlock"
)

func init() {
	register(command{"fleetlock serve", "run a FleetLock reboot-coordination server (memory or etcd store)", cmdFleetlockServe})
	register(command{"fleetlock status", "show who holds the reboot slots of a FleetLock server, per group", cmdFleetlockStatus})
	register(command{"fleetlock release", "release a stale holder's reboot slot (operator action)", cmdFleetlockRelease})
	register(command{"fleetlock lock", "take a reboot slot as this node, as the agent does before rebooting", cmdFleetlockLock})
	register(command{"fleetlock unlock", "release this node's reboot slot, as the agent does after a healthy boot", cmdFleetlockUnlock})
	register(command{"fleetlock id", "print this node's FleetLock id (derived from /etc/machine-id)", cmdFleetlockID})

	// The etcd client logs through grpc's global logger, to stderr by
	// default. Set once here, before any client exists, and forwarded to
	// the serving command's logger at debug level.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(grpcSink{}, grpcSink{}, grpcSink{}))
}

// Defaults of the server's listeners and so of the clients' --server.
const (
	fleetlockListen      = "127.0.0.1:8470"
	fleetlockAdminListen = "127.0.0.1:8471"
)

// grpcLog is the logger grpc's messages go to; nil drops them.
var grpcLog atomic.Pointer[logrus.Logger]

type grpcSink struct{}

func (grpcSink) Write(p []byte) (int, error) {
	if l := grpcLog.Load(); l != nil {
		l.WithField("component", "grpc").Debug(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// fleetlockServing, when set (by tests), is called once the server
// listens, with its protocol and admin addresses and a function that
// stops it.
var fleetlockServing func(protocol, admin string, stop func())

func cmdFleetlockServe(g *globals, args []string) error {
	fs := g.flagSet("fleetlock serve", "fleetlock serve [--listen ADDR] [--admin-listen ADDR] [--store memory|etcd] [--etcd-endpoints URLS] [--slots N] [--group-slots GROUP=N]...", false)
	listen := fs.String("listen", fleetlockListen, "address of the FleetLock protocol endpoints (use e.g. 0.0.0.0:8470 to serve the fleet)")
	adminListen := fs.String("admin-listen", fleetlockAdminListen, `address of the operator API (status, release), which has no authentication; "none" disables it, the --listen address serves both`)
	basePath := fs.String("base-path", "/", "URL path under which the protocol endpoints are served (the nodes' base URL path)")
	storeKind := fs.String("store", "memory", "where holders are kept: memory (lost on restart) or etcd")
	endpoints := fs.StringSlice("etcd-endpoints", []string{"http://127.0.0.1:2379"}, "etcd client URLs, comma-separated (--store etcd)")
	prefix := fs.String("etcd-prefix", fleetlock.DefaultEtcdPrefix, "etcd key prefix (--store etcd)")
	slots := fs.Int("slots", 1, "reboot slots of every group not named by --group-slots")
	groupSlots := fs.StringSlice("group-slots", nil, "GROUP=N: reboot slots of one group; repeatable or comma-separated; N=0 closes the group")
	storeTimeout := fs.Duration("store-timeout", fleetlock.DefaultStoreTimeout, "bound on the store calls of one request; past it the request fails")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("fleetlock serve takes no arguments, got %q", fs.Args())}
	}
	if *slots < 1 {
		return usageError{fmt.Sprintf("--slots %d: want at least 1", *slots)}
	}
	if *storeTimeout <= 0 {
		return usageError{fmt.Sprintf("--store-timeout %v: want a positive duration", *storeTimeout)}
	}
	perGroup, err := parseGroupSlots(*groupSlots)
	if err != nil {
		return err
	}
	base := "/" + strings.Trim(*basePath, "/")
	if base == "/" {
		base = ""
	}

	var store fleetlock.Store
	var ping func(context.Context) error
	switch *storeKind {
	case "memory":
		store = fleetlock.NewMemory()
	case "etcd":
		if len(*endpoints) == 0 {
			return usageError{"--store etcd needs --etcd-endpoints"}
		}
		grpcLog.Store(g.log)
		e, err := fleetlock.NewEtcd(fleetlock.EtcdConfig{Endpoints: *endpoints, Prefix: *prefix})
		if err != nil {
			return err
		}
		defer e.Close()
		store, ping = e, e.Ping
	default:
		return usageError{fmt.Sprintf("--store %q: want memory or etcd", *storeKind)}
	}

	srv, err := fleetlock.NewServer(fleetlock.Config{
		Store:        store,
		Slots:        *slots,
		GroupSlots:   perGroup,
		StoreTimeout: *storeTimeout,
		OnEvent:      func(e fleetlock.Event) { logFleetlockEvent(g.log, e) },
	})
	if err != nil {
		return err
	}
	protocol := srv.Handler()
	if base != "" {
		protocol = http.StripPrefix(base, protocol)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	type listener struct {
		what string
		l    net.Listener
		h    http.Handler
	}
	var ls []listener
	pl, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	adminAddr := ""
	// The same address names one shared listener, except with port 0,
	// which asks for two different free ports.
	_, port, _ := net.SplitHostPort(*listen)
	shared := *adminListen == *listen && port != "0"
	switch {
	case *adminListen == "" || *adminListen == "none":
		ls = append(ls, listener{"protocol", pl, protocol})
	case shared:
		mux := http.NewServeMux()
		mux.Handle("/admin/", srv.AdminHandler())
		mux.Handle("/", protocol)
		ls = append(ls, listener{"protocol+admin", pl, mux})
		adminAddr = pl.Addr().String()
		g.log.Warn("the operator API shares the protocol listener: whoever reaches it can release locks")
	default:
		al, err := net.Listen("tcp", *adminListen)
		if err != nil {
			pl.Close()
			return fmt.Errorf("--admin-listen: %w", err)
		}
		ls = append(ls, listener{"protocol", pl, protocol}, listener{"admin", al, srv.AdminHandler()})
		adminAddr = al.Addr().String()
	}

	if ping != nil {
		pctx, cancel := context.WithTimeout(ctx, *storeTimeout)
		if err := ping(pctx); err != nil {
			g.log.WithError(err).Warn("etcd does not answer yet; lock requests fail until it does")
		}
		cancel()
	}

	// net/http's own complaints (bad TLS, broken connections) go to the
	// logger too.
	errLog := g.log.WriterLevel(logrus.WarnLevel)
	defer errLog.Close()
	errc := make(chan error, len(ls))
	var servers []*http.Server
	for _, l := range ls {
		hs := &http.Server{
			Handler:           l.h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      *storeTimeout + 30*time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          stdlog.New(errLog, "", 0),
		}
		servers = append(servers, hs)
		go func() {
			if err := hs.Serve(l.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", l.what, err)
			}
		}()
	}
	g.log.WithFields(logrus.Fields{
		"listen": pl.Addr().String(), "admin": adminAddr, "base_path": base + "/", "store": *storeKind,
		"slots": *slots, "group_slots": strings.Join(*groupSlots, ","),
	}).Info("fleetlock server listening")
	if fleetlockServing != nil {
		go fleetlockServing(pl.Addr().String(), adminAddr, stop)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, hs := range servers {
		hs.Shutdown(sctx)
	}
	if serveErr == nil {
		g.log.Info("fleetlock server stopped")
	}
	return serveErr
}

// parseGroupSlots parses --group-slots GROUP=N values.
func parseGroupSlots(vals []string) (map[string]int, error) {
	out := map[string]int{}
	for _, v := range vals {
		name, num, ok := strings.Cut(v, "=")
		if !ok {
			return nil, usageError{fmt.Sprintf("--group-slots %q: want GROUP=N", v)}
		}
		if err := fleetlock.ValidGroup(name); err != nil {
			return nil, usageError{fmt.Sprintf("--group-slots %q: %v", v, err)}
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 {
			return nil, usageError{fmt.Sprintf("--group-slots %q: N must be a whole number, 0 or more", v)}
		}
		if _, dup := out[name]; dup {
			return nil, usageError{fmt.Sprintf("--group-slots: group %s given twice", name)}
		}
		out[name] = n
	}
	return out, nil
}

// logFleetlockEvent logs what the server did: taking and releasing slots
// at info, the repeated asks of waiting or steady nodes at debug.
func logFleetlockEvent(log *logrus.Logger, e fleetlock.Event) {
	entry := log.WithFields(logrus.Fields{"op": e.Op, "group": e.Group, "id": e.ID, "result": e.Result})
	if !e.Since.IsZero() {
		entry = entry.WithField("since", e.Since.Format(time.RFC3339))
	}
	switch e.Result {
	case "error":
		entry.WithError(e.Err).Warn("fleetlock request failed")
	case "granted", "released":
		entry.Info("fleetlock")
	default:
		entry.Debug("fleetlock")
	}
}

// clientFlags are the flags of the commands that talk to a server.
type clientFlags struct {
	server  *string
	timeout *time.Duration
}

func addClientFlags(fs *pflag.FlagSet, defServer, what string) clientFlags {
	return clientFlags{
		server:  fs.String("server", defServer, what),
		timeout: fs.Duration("timeout", 30*time.Second, "give up on the server after this long"),
	}
}

func cmdFleetlockStatus(g *globals, args []string) error {
	fs := g.flagSet("fleetlock status", "fleetlock status [--server ADMIN-URL] [--group GROUP] [--json]", false)
	cf := addClientFlags(fs, "http://"+fleetlockAdminListen, "the server's operator API (its --admin-listen)")
	group := fs.String("group", "", "show only this group")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("fleetlock status takes no arguments, got %q", fs.Args())}
	}
	ac := &fleetlock.AdminClient{BaseURL: *cf.server, Timeout: *cf.timeout}
	st, err := ac.Status(context.Background(), *group)
	if err != nil {
		return fleetlockErr(err)
	}
	if *asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printFleetlockStatus(g.stdout, st, time.Now())
	return nil
}

func printFleetlockStatus(w io.Writer, st *fleetlock.Status, now time.Time) {
	fmt.Fprintf(w, "default slots per group: %d\n", st.DefaultSlots)
	if len(st.Groups) == 0 {
		fmt.Fprintln(w, "no slot is held")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tHELD\tHOLDER\tSINCE\tFOR")
	for _, gs := range st.Groups {
		held := fmt.Sprintf("%d/%d", len(gs.Holders), gs.Slots)
		if len(gs.Holders) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\n", gs.Group, held)
		}
		for i, h := range gs.Holders {
			name := gs.Group
			if i > 0 {
				name, held = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, held, h.ID, h.Since.Format(time.RFC3339), now.Sub(h.Since).Round(time.Second))
		}
	}
	tw.Flush()
}

func cmdFleetlockRelease(g *globals, args []string) error {
	fs := g.flagSet("fleetlock release", "fleetlock release --group GROUP --id ID [--server ADMIN-URL]", false)
	cf := addClientFlags(fs, "http://"+fleetlockAdminListen, "the server's operator API (its --admin-listen)")
	group := fs.String("group", "", "group of the holder (required)")
	id := fs.String("id", "", "id of the holder, as fleetlock status shows it (required)")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("fleetlock release takes no arguments, got %q", fs.Args())}
	}
	if *group == "" || *id == "" {
		return usageError{"fleetlock release needs --group and --id"}
	}
	ac := &fleetlock.AdminClient{BaseURL: *cf.server, Timeout: *cf.timeout}
	if err := ac.Release(context.Background(), *group, *id); err != nil {
		return fleetlockErr(err)
	}
	fmt.Fprintf(g.stdout, "released the reboot slot of %s in group %s\n", *id, *group)
	return nil
}

// nodeClient parses the flags shared by lock and unlock.
func nodeClient(g *globals, name string, args []string) (*fleetlock.Client, error) {
	fs := g.flagSet(name, name+" [--server URL] [--group GROUP] [--id ID]", false)
	cf := addClientFlags(fs, "http://"+fleetlockListen, "the FleetLock base URL (the server's --listen, plus its --base-path)")
	group := fs.String("group", fleetlock.DefaultGroup, "reboot group")
	id := fs.String("id", "", "node id (default: derived from the machine id, see fleetlock id)")
	machineID := fs.String("machine-id", fleetlock.DefaultMachineIDPath, "machine id file the default node id is derived from")
	if err := g.parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Sprintf("%s takes no arguments, got %q", name, fs.Args())}
	}
	if err := fleetlock.ValidGroup(*group); err != nil {
		return nil, usageError{fmt.Sprintf("--group: %v", err)}
	}
	if *id == "" {
		var err error
		if *id, err = fleetlock.NodeID(*machineID); err != nil {
			return nil, fmt.Errorf("no --id given and %w", err)
		}
	} else if err := fleetlock.ValidID(*id); err != nil {
		return nil, usageError{fmt.Sprintf("--id: %v", err)}
	}
	return &fleetlock.Client{BaseURL: *cf.server, Group: *group, ID: *id, Timeout: *cf.timeout}, nil
}

func cmdFleetlockLock(g *globals, args []string) error {
	c, err := nodeClient(g, "fleetlock lock", args)
	if err != nil {
		return err
	}
	if err := c.PreReboot(context.Background()); err != nil {
		return fleetlockErr(err)
	}
	fmt.Fprintf(g.stdout, "%s holds a reboot slot in group %s\n", c.ID, c.Group)
	return nil
}

func cmdFleetlockUnlock(g *globals, args []string) error {
	c, err := nodeClient(g, "fleetlock unlock", args)
	if err != nil {
		return err
	}
	if err := c.SteadyState(context.Background()); err != nil {
		return fleetlockErr(err)
	}
	fmt.Fprintf(g.stdout, "%s holds no reboot slot in group %s (steady state)\n", c.ID, c.Group)
	return nil
}

func cmdFleetlockID(g *globals, args []string) error {
	fs := g.flagSet("fleetlock id", "fleetlock id [--machine-id PATH]", false)
	machineID := fs.String("machine-id", fleetlock.DefaultMachineIDPath, "machine id file to derive the id from")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("fleetlock id takes no arguments, got %q", fs.Args())}
	}
	id, err := fleetlock.NodeID(*machineID)
	if err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, id)
	return nil
}

// fleetlockErr turns the package's invalid-parameter errors into usage
// errors (exit 2); the rest stay errors (exit 1).
func fleetlockErr(err error) error {
	if errors.Is(err, fleetlock.ErrInvalid) {
		return usageError{err.Error()}
	}
	return err
}
