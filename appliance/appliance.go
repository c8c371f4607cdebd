// Package appliance is the Malleable daemon: its configuration, the wiring of
// its parts, and the admin REST API. Run is the entry point; cmd/malleable
// is the only caller.
package appliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/malleable-cloud/malleable/appliance/allocator"
	"github.com/malleable-cloud/malleable/appliance/allocator/hil"
	"github.com/malleable-cloud/malleable/appliance/api"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/broker"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
	"github.com/malleable-cloud/malleable/tenants"
)

// Parts are what the appliance's listener serves: the admin API, the
// tenants' broker and the M2 API, each with its own authentication.
type Parts struct {
	Store *store.Store
	// Token is the admin bearer token.
	Token  string
	Limits lease.Limits
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Registry is served on /metrics; a new one when nil.
	Registry *prometheus.Registry
	// Secrets keeps BMC passwords.
	Secrets api.SecretStore
	// Allocator is checked for optional abilities (HIL checks a node
	// before it is registered); Power drives it.
	Allocator any
	// Reconciler runs passes asked for over the API.
	Reconciler *reconcile.Reconciler
	// Power is the power plane the broker, the API and the reconciler
	// share; the power and broker routes answer 503 without.
	Power *power.Plane
	// Project names a tenant's allocator project, for the broker's
	// check before a command; nil skips it.
	Project func(tenant string) string
	// M2 is the embedded M2 backend; its routes answer 503 without
	// either it or M2Remote.
	M2 *server.Backend
	// Tenants onboards tenants; nil when [tenants] runtime = none.
	Tenants api.TenantService
	// M2Remote, when set instead of M2, forwards authenticated M2
	// requests to a standalone backend ([m2] endpoint).
	M2Remote   *m2Remote
	M2Timeouts server.Timeouts
}

// Handler routes by prefix: /broker/v1 to the broker, /m2/v1 to M2, the
// rest to the admin API. One metrics middleware counts them all.
func (p Parts) Handler() http.Handler {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	var checker api.NodeChecker
	if c, ok := p.Allocator.(api.NodeChecker); ok {
		checker = c
	}
	a := api.New(api.Config{Store: p.Store, Limits: p.Limits, Token: p.Token, Logger: p.Logger, Now: p.Now, Registry: p.Registry,
		Secrets: p.Secrets, Checker: checker, Reconciler: p.Reconciler, Power: p.Power, Tenants: p.Tenants})
	b := broker.New(broker.Config{Store: p.Store, Power: p.Power, Project: p.Project, M2: p.M2 != nil || p.M2Remote != nil,
		Middleware: a.Metrics(), Logger: p.Logger, Now: p.Now})
	mux := http.NewServeMux()
	mux.Handle(broker.Prefix+"/", b.Handler())
	mux.Handle(server.Prefix+"/", p.m2Handler(a.Authenticate, a.Metrics()))
	mux.Handle("/", a.Handler())
	return mux
}

// RunOptions are the hooks a caller of Run may set.
type RunOptions struct {
	// Ready, if set, is called with the admin API's address once it
	// accepts connections.
	Ready func(addr string)
	// Hook, if set, is called at every handover step boundary (see
	// lease.Machine.Hook). Only fault-injection tests set it.
	Hook func(point string)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Run starts the appliance and blocks until ctx is cancelled, then shuts down
// gracefully within cfg.Appliance.ShutdownTimeout: the admin API, the broker
// and the cron-driven reconciler.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts RunOptions) error {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	token, sec, release, err := openState(cfg, log)
	if err != nil {
		return err
	}
	defer release()
	defer sec.Close()
	st, err := store.Open(ctx, cfg.Store.Path)
	if err != nil {
		return err
	}
	defer st.Close()
	v, _ := st.SchemaVersion(ctx)
	log.Info("store open", "path", cfg.Store.Path, "schema_version", v)
	assigned, err := st.SetTenantBMCRange(ctx, cfg.Nodes.TenantBMCPrefix())
	if err != nil {
		return err
	}
	if assigned > 0 {
		log.Info("gave nodes tenant-facing BMC addresses", "nodes", assigned, "range", cfg.Nodes.TenantBMCRange)
	}
	secStore, ca, closeVault, err := openSecrets(ctx, cfg, sec, now, log)
	if err != nil {
		return err
	}
	defer closeVault()
	alloc, err := allocator.Open(ctx, allocator.Config{Type: cfg.Allocator.Type,
		HIL: hil.ClientConfig{Endpoint: cfg.HIL.Endpoint, Username: cfg.HIL.Username,
			PasswordFile: cfg.HIL.PasswordFile, Timeout: cfg.HIL.Timeout},
		BMC: bmc.Options{Timeout: cfg.BMC.Timeout, Retries: cfg.BMC.Retries}}, st, secStore, log)
	if err != nil {
		return err
	}
	var m2b *server.Backend
	var disks lease.Disks
	var remote *m2Remote
	switch {
	case cfg.M2.Endpoint != "":
		if remote, err = newM2Remote(cfg.M2.Endpoint, token, m2Timeouts(cfg), log); err != nil {
			return fmt.Errorf("[m2] endpoint: %w", err)
		}
		disks = remote
		log.Info("M2 storage served by a standalone backend", "endpoint", cfg.M2.Endpoint)
	case cfg.M2.Enabled:
		m, err := startM2(ctx, cfg, secStore, log)
		if err != nil {
			return err
		}
		defer m.close(context.WithoutCancel(ctx))
		m2b, disks = m.backend, m2Disks{m.backend}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pw := power.New(alloc, cfg.Broker.StatusCacheTTL, now)
	project := func(tenant string) string { return cfg.Allocator.ProjectPrefix + tenant }
	rec := &reconcile.Reconciler{
		Store: st, Allocator: alloc, Log: log.With("component", "reconciler"), Now: now,
		Concurrency: cfg.Reconcile.Concurrency, Metrics: reconcile.NewMetrics(reg), Power: pw,
		Machine: &lease.Machine{
			Hardware:        pw.Hardware(),
			Disks:           disks,
			Journal:         pw.Journal(store.Journal{Store: st, Now: now}),
			Project:         project,
			MaxAttempts:     cfg.Reconcile.MaxAttempts,
			PowerOffTimeout: cfg.Reconcile.PowerOffTimeout,
			PollInterval:    250 * time.Millisecond,
			Hook:            opts.Hook,
		},
	}
	var tenantDisks tenants.DiskRemover
	switch {
	case remote != nil:
		tenantDisks = remote
	case m2b != nil:
		tenantDisks = m2b
	}
	tp, err := startTenants(ctx, cfg, st, secStore, ca, rec, tenantDisks, now, log)
	if err != nil {
		return err
	}
	parts := Parts{Store: st, Token: token, Limits: cfg.Leases.Limits(), Logger: log, Now: now, Registry: reg, Secrets: secStore,
		Allocator: alloc, Reconciler: rec, Power: pw, Project: project, M2: m2b, M2Remote: remote, M2Timeouts: m2Timeouts(cfg)}
	if tp != nil {
		parts.Tenants = tp.service
		defer tp.runtime.Close()
		defer tp.listeners.closeAll()
	}
	handler := parts.Handler()
	if tp != nil {
		tp.listeners.handler = handler
	}

	ln, err := net.Listen("tcp", cfg.Appliance.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Appliance.Listen, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("admin API listening", "addr", ln.Addr().String())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rec.RunCron(gctx, cfg.Reconcile.Schedule, log) })
	// Passes asked for over the API run here, in the daemon's context.
	g.Go(func() error { return rec.Serve(gctx) })
	if tp != nil {
		// Tenant jobs too; those a stop interrupted run again first.
		g.Go(func() error { return tp.service.Jobs.Serve(gctx) })
		g.Go(func() error { return tp.drift.Run(gctx, cfg.Tenants.DriftInterval) })
	}
	// A first pass at start-up resumes handovers a crash interrupted.
	g.Go(func() error {
		defer func() {
			// The pass records its own panic; one node's bug must not
			// take the daemon down (cron and Serve recover likewise).
			if v := recover(); v != nil {
				log.Error("start-up reconcile pass panicked", "panic", v)
			}
		}()
		if _, err := rec.PassAs(gctx, pass.TriggerStartup, ""); err != nil && gctx.Err() == nil {
			log.Warn("start-up reconcile pass failed", "err", err)
		}
		return nil
	})
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String())
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve admin API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "timeout", cfg.Appliance.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Appliance.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shut down admin API: %w", err)
		}
		return nil
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// openState creates (or makes private) the data directory and takes it
// for this process, then opens the admin token and the secret store: what
// every role of the appliance needs first. release gives the directory up.
func openState(cfg Config, log *slog.Logger) (token string, sec *secrets.FileStore, release func(), err error) {
	if err := ensurePrivateDir(cfg.Appliance.DataDir, log); err != nil {
		return "", nil, nil, fmt.Errorf("data directory: %w", err)
	}
	release, err = lockDataDir(cfg.Appliance.DataDir)
	if err != nil {
		return "", nil, nil, err
	}
	token, created, err := EnsureToken(cfg.Appliance.AdminTokenFile)
	if err != nil {
		release()
		return "", nil, nil, err
	}
	if created {
		log.Info("generated admin token", "path", cfg.Appliance.AdminTokenFile)
	}
	sec, err = secrets.OpenFile(cfg.Secrets.File)
	if err != nil {
		release()
		return "", nil, nil, fmt.Errorf("open secret store: %w", err)
	}
	return token, sec, release, nil
}

// EnsureToken returns the admin token kept in path, generating a new random
// one (mode 0600, in a directory created 0700) if the file does not exist.
// A token file readable by group or others is refused.
func EnsureToken(path string) (token string, created bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("create token directory: %w", err)
	}
	buf := make([]byte, 32)
	rand.Read(buf)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		token = hex.EncodeToString(buf)
		_, werr := f.WriteString(token + "\n")
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			os.Remove(path)
			return "", false, fmt.Errorf("write admin token %s: %w", path, err)
		}
		return token, true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return "", false, fmt.Errorf("create admin token %s: %w", path, err)
	}
	token, err = ReadToken(path)
	return token, false, err
}

// ReadToken reads an admin token file, refusing one that group or others
// can read.
func ReadToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("admin token %s has mode %04o: it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("admin token %s is shorter than 16 characters", path)
	}
	return t, nil
}
