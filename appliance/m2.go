package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/broker"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/storage"
)

// m2Backend is a running M2 backend with what it owns.
type m2Backend struct {
	backend *server.Backend
	close   func(context.Context)
}

// startM2 starts the M2 backend: storage under [m2] dir, tgtd (supervised
// or external), and the backend, which re-creates every target from its
// metadata.
func startM2(ctx context.Context, cfg Config, sec server.Secrets, log *slog.Logger) (*m2Backend, error) {
	m := cfg.M2
	log = log.With("component", "m2")
	if err := ensurePrivateDir(m.Dir, log); err != nil {
		return nil, fmt.Errorf("m2: %w", err)
	}
	vols, err := storage.NewFile(filepath.Join(m.Dir, "volumes"), storage.FileOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("m2: storage: %w", err)
	}
	opts := iscsi.Options{Portal: m.Portal, ControlPort: m.TgtdControlPort, Logger: log}
	var tgtd *iscsi.Tgtd
	if m.Tgtd == "supervise" {
		if tgtd, err = iscsi.StartTgtd(ctx, opts); err != nil {
			vols.Close()
			return nil, fmt.Errorf("m2: start tgtd: %w", err)
		}
		log.Info("tgtd started", "portal", m.Portal, "control_port", m.TgtdControlPort)
	}
	portal := m.BootPortal
	if portal == "" {
		portal = m.Portal
	}
	b, err := server.Open(ctx, server.Config{DB: filepath.Join(m.Dir, "m2.db"), IQNPrefix: m.IQNPrefix, Portal: portal,
		Storage: vols, Targets: iscsi.New(opts), Secrets: sec, Logger: log})
	if err != nil {
		if tgtd != nil {
			tgtd.Stop(context.WithoutCancel(ctx))
		}
		vols.Close()
		return nil, err
	}
	sup := &tgtdSupervisor{tgtd: tgtd, opts: opts, backend: b, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	if tgtd != nil {
		go sup.watch(context.WithoutCancel(ctx))
	} else {
		close(sup.done)
	}
	return &m2Backend{backend: b, close: func(ctx context.Context) {
		sup.shutdown(ctx)
		b.Close()
		vols.Close()
	}}, nil
}

// tgtdSupervisor restarts a supervised tgtd that died and has the backend
// re-create every target in it: tgtd keeps its targets in memory only.
type tgtdSupervisor struct {
	opts    iscsi.Options
	backend *server.Backend
	log     *slog.Logger
	stop    chan struct{} // closed to end watch
	done    chan struct{} // closed when watch has returned

	mu   sync.Mutex
	tgtd *iscsi.Tgtd
}

func (s *tgtdSupervisor) current() *iscsi.Tgtd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tgtd
}

// watch waits for tgtd to exit and brings it back, with a growing pause
// between attempts, until stop is closed.
func (s *tgtdSupervisor) watch(ctx context.Context) {
	defer close(s.done)
	pause := time.Second
	for {
		select {
		case <-s.stop:
			return
		case <-s.current().Done():
		}
		s.log.Error("tgtd exited; restarting it and re-creating its targets", "err", s.current().Err())
		restarted := false
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(pause):
			}
			if !restarted {
				t, err := iscsi.StartTgtd(ctx, s.opts)
				if err != nil {
					s.log.Error("restart tgtd", "err", err)
					pause = min(2*pause, time.Minute)
					continue
				}
				s.mu.Lock()
				s.tgtd = t
				s.mu.Unlock()
				restarted = true
			}
			if err := s.backend.Recover(ctx); err != nil {
				s.log.Error("re-create targets", "err", err)
				pause = min(2*pause, time.Minute)
				continue
			}
			s.log.Info("tgtd restarted, targets re-created")
			pause = time.Second
			break
		}
	}
}

// shutdown stops watching, then stops tgtd.
func (s *tgtdSupervisor) shutdown(ctx context.Context) {
	close(s.stop)
	<-s.done
	if t := s.current(); t != nil {
		if err := t.Stop(ctx); err != nil {
			s.log.Warn("stop tgtd", "err", err)
		}
	}
}

// m2Timeouts are the M2 copy routes' own deadlines from [m2].
func m2Timeouts(cfg Config) server.Timeouts {
	return server.Timeouts{Transfer: cfg.M2.TransferTimeout, Operation: cfg.M2.OperationTimeout}
}

// m2Disks is the handover's unbind step over the M2 backend: the old
// tenant's disk is detached from the node (and kept).
type m2Disks struct{ b *server.Backend }

func (d m2Disks) UnbindNode(ctx context.Context, node, tenant string) error {
	return d.b.DetachNode(ctx, node, tenant)
}

// bootAllowed lets a node fetch its boot script, and a disk be attached to
// it, only while the disk's project holds the node; holder answers who does.
func bootAllowed(holder func(ctx context.Context, node string) (string, error)) func(ctx context.Context, project, node string) error {
	return func(ctx context.Context, project, node string) error {
		if t := broker.Tenant(ctx); t != "" && t != project {
			return fmt.Errorf("a disk of %s, asked for by %s", project, t)
		}
		holder, err := holder(ctx, node)
		if err != nil {
			return err
		}
		if holder != project {
			return fmt.Errorf("node %s is not held by %s", node, project)
		}
		return nil
	}
}

// m2Handler serves the M2 API on the appliance's listener. The admin
// token acts for every project, a tenant's broker token for the tenant's
// project only, and a node's iPXE fetches its boot script with the
// per-attach token in the path, its only credential (a smart-proxy
// relaying it also sends its own token, and then gets only its own
// tenant's scripts). Attaching needs the node to be held by the project,
// and boot scripts are served only while it still is. Every mutation,
// refused or not, goes to the audit log.
func (p Parts) m2Handler(admin func(*http.Request) bool, metrics mux.MiddlewareFunc) http.Handler {
	var r http.Handler = p.m2Router(metrics)
	if p.M2Remote != nil {
		r = metrics(p.M2Remote.forward(audit.Recorder{Log: p.Store, Logger: p.Logger}, p.Now))
	}
	return httpx.Protected(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		boot := strings.HasPrefix(req.URL.Path, server.Prefix+"/boot/") && req.Method == http.MethodGet
		// The admin token is compared in memory; only other tokens cost a
		// store lookup.
		if !boot && admin(req) {
			req = req.WithContext(audit.WithActor(req.Context(), "admin"))
		} else if tenant, ok := broker.Authenticate(p.Store, req); ok {
			req = req.WithContext(broker.WithTenant(req.Context(), tenant))
		} else if !boot {
			httpx.Unauthorized(w, "malleable", "missing or invalid bearer token")
			return
		}
		r.ServeHTTP(w, req)
	}))
}

// m2Router is the M2 API's bare router on the appliance's listener.
func (p Parts) m2Router(metrics mux.MiddlewareFunc) *mux.Router {
	rs := httpx.Responder{Log: p.Logger}
	r := mux.NewRouter()
	r.Use(metrics)
	r.NotFoundHandler = rs.NotFound()
	r.MethodNotAllowedHandler = rs.MethodNotAllowed()
	recorder := audit.Recorder{Log: p.Store, Logger: p.Logger}
	server.Register(r, server.HandlerConfig{
		Backend: p.M2,
		Authorize: func(r *http.Request) (server.Caller, bool) {
			if t := broker.Tenant(r.Context()); t != "" {
				return server.Caller{Project: t}, true
			}
			return server.Caller{Admin: true}, true
		},
		AttachAllowed: bootAllowed(p.Store.Holder),
		BootAllowed:   bootAllowed(p.Store.Holder),
		Audit: func(r *http.Request, rec server.AuditRecord) {
			recorder.Record(r.Context(), audit.Entry{At: p.Now(), Actor: audit.Actor(r.Context()), Action: rec.Action,
				Target: rec.Target, Detail: rec.Detail, Result: audit.Result(rec.Status, rec.Err)})
		},
		Timeouts: p.M2Timeouts,
		Logger:   p.Logger,
	})
	return r
}

// RunM2 runs the M2 backend alone — `malleable m2 serve` — for a storage
// host apart from the appliance, until ctx ends. Its API on [m2] listen
// answers the admin token, which is the appliance's own (copied here): the
// appliance forwards its tenants' calls with their project in
// projectHeader. Attaching a disk and serving a boot script need the node
// to be held by the disk's project, which it asks the appliance at
// [m2] appliance; without one, both are refused.
func RunM2(ctx context.Context, cfg Config, log *slog.Logger, ready func(addr string)) error {
	token, sec, release, err := openState(cfg, log)
	if err != nil {
		return err
	}
	defer release()
	defer sec.Close()
	m, err := startM2(ctx, cfg, sec, log)
	if err != nil {
		return err
	}
	defer m.close(context.WithoutCancel(ctx))
	holder := noAppliance
	if cfg.M2.Appliance != "" {
		u, err := parseEndpoint(cfg.M2.Appliance)
		if err != nil {
			return fmt.Errorf("[m2] appliance: %w", err)
		}
		holder = applianceHolder(u.String(), token)
		log.Info("leases checked with the appliance", "appliance", u.String())
	} else {
		log.Warn("no [m2] appliance: attaching disks and serving boot scripts are refused")
	}
	caller := remoteCaller(token)
	inner := server.Handler(server.HandlerConfig{
		Backend:       m.backend,
		Authorize:     caller,
		AttachAllowed: bootAllowed(holder),
		BootAllowed:   bootAllowed(holder),
		Audit: func(r *http.Request, rec server.AuditRecord) {
			// No audit log of its own: the mutations go to its log.
			log.Info("m2 audit", "action", rec.Action, "target", rec.Target, "detail", rec.Detail, "status", rec.Status, "err", rec.Err)
		},
		Timeouts: m2Timeouts(cfg),
		Logger:   log,
	})
	// A boot script relayed by the appliance for a tenant is that tenant's
	// only, as on the appliance's own listener.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := caller(r); ok && c.Project != "" {
			r = r.WithContext(broker.WithTenant(r.Context(), c.Project))
		}
		inner.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", cfg.M2.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.M2.Listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("M2 API listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve M2 API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Appliance.ShutdownTimeout)
	defer cancel()
	return srv.Shutdown(sctx)
}

// errNoAppliance refuses attaches and boot scripts on a standalone backend
// that has no appliance to check leases with.
var errNoAppliance = errors.New("no appliance to check leases with ([m2] appliance)")

func noAppliance(context.Context, string) (string, error) { return "", errNoAppliance }

// applianceHolder asks the appliance at base which tenant holds a node.
func applianceHolder(base, token string) func(ctx context.Context, node string) (string, error) {
	c := httpx.Caller{Base: base, Token: token, HTTP: &http.Client{Timeout: 10 * time.Second}}
	return func(ctx context.Context, node string) (string, error) {
		var h wire.Holder
		if err := c.Do(ctx, http.MethodGet, "/api/v1/nodes/"+httpx.PathEscape(node)+"/holder", nil, &h); err != nil {
			return "", fmt.Errorf("ask the appliance who holds %s: %w", node, err)
		}
		return h.Holder, nil
	}
}
