// Package smartproxy is Malleable's per-tenant Foreman smart-proxy: the
// root module (/features, /version, /v2/features), the BMC module (/bmc),
// answered byte for byte like theforeman/smart-proxy, and the M2 plugin
// (/m2). It keeps no authority of its own: every power decision goes to the
// appliance's broker API and every storage call to its M2 API, both of
// which derive the tenant from the proxy's credential. A node the tenant
// does not hold reads "off" and refuses every action.
package smartproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"golang.org/x/sync/errgroup"
)

// Options are a Server's collaborators.
type Options struct {
	Logger *slog.Logger
	// Broker decides power; required.
	Broker Broker
	// Storage serves the M2 plugin; required when [m2] is enabled.
	Storage Storage
	// Version is reported by /version; "dev" when empty.
	Version string
	// Resolver names plain-HTTP clients; net.DefaultResolver when nil.
	Resolver Resolver
}

// Server is one tenant's smart-proxy.
type Server struct {
	cfg      Config
	log      *slog.Logger
	broker   Broker
	storage  Storage
	version  string
	resolver Resolver
	trusted  []string
	bmcUser  []byte
	bmcPass  []byte
	tls      *tls.Config // nil without https_listen

	now func() time.Time

	mu      sync.Mutex
	id      brokerapi.Identity // from the broker, once known
	idAt    time.Time          // when id was last asked; zero until known
	idKnown bool
}

// identityTTL is how long the appliance's answer about this proxy's tenant
// and features is trusted before it is asked again.
const identityTTL = 10 * time.Second

// New returns the smart-proxy cfg describes. It loads the TLS files and the
// BMC password file named in cfg, which must be valid (Config.Validate).
func New(cfg Config, opts Options) (*Server, error) {
	if opts.Broker == nil {
		return nil, errors.New("smartproxy: no broker")
	}
	if cfg.M2.Enabled && opts.Storage == nil {
		return nil, errors.New("smartproxy: [m2] is enabled but there is no storage")
	}
	s := &Server{cfg: cfg, log: opts.Logger, broker: opts.Broker, storage: opts.Storage, version: opts.Version,
		resolver: opts.Resolver, trusted: cfg.Proxy.trustedHosts(), bmcUser: []byte(cfg.BMC.Username), now: time.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.version == "" {
		s.version = "dev"
	}
	if s.resolver == nil {
		s.resolver = net.DefaultResolver
	}
	pass, err := readSecretFile(cfg.BMC.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("bmc.password_file: %w", err)
	}
	s.bmcPass = []byte(pass)
	if cfg.Proxy.HTTPSListen != "" {
		if s.tls, err = serverTLS(cfg.Proxy); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Handler serves every route: the one for the HTTPS and HTTP listeners.
func (s *Server) Handler() http.Handler { return s.logged(http.HandlerFunc(s.route)) }

// BootHandler serves only GET /m2/boot/<token>: the boot listener's.
func (s *Server) BootHandler() http.Handler {
	return s.logged(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := mounted(r.URL.EscapedPath(), "/m2"); ok && s.cfg.M2.Enabled {
			if token, ok := bootToken(r, rest); ok {
				s.m2Do(w, r, func(r *http.Request) error { return s.m2Boot(w, r, token) })
				return
			}
		}
		writeJSONError(w, http.StatusNotFound, "this listener serves only GET /m2/boot/<token>")
	}))
}

// route dispatches by mount point, as the Ruby proxy's rack URLMap does:
// the root app at / (and /v2), the BMC module at /bmc, M2 at /m2.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath() // rack's PATH_INFO is not unescaped
	if rest, ok := mounted(p, "/bmc"); ok {
		s.serveBMC(w, r, rest)
		return
	}
	if rest, ok := mounted(p, "/m2"); ok && s.m2Served(r.Context()) {
		s.serveM2(w, r, rest)
		return
	}
	if rest, ok := mounted(p, "/v2"); ok {
		s.serveV2(w, r, rest)
		return
	}
	s.serveRoot(w, r)
}

// m2Served reports whether the M2 plugin answers: [m2] is enabled and the
// appliance's M2 is on or, if the broker cannot be asked, may be (the
// plugin's calls then say what failed).
func (s *Server) m2Served(ctx context.Context) bool {
	if !s.cfg.M2.Enabled {
		return false
	}
	id, err := s.identity(ctx)
	return err != nil || id.Features.M2
}

// mounted reports whether path is under prefix, and the rest of it ("" for
// the prefix itself).
func mounted(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		return "", false
	}
	return rest, true
}

// isGet reports whether r is a GET or HEAD, which Sinatra routes alike.
func isGet(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }

// halt is the Ruby proxy's log_halt: a status and a plain-text body.
type halt struct {
	status int
	msg    string
}

func (h *halt) Error() string { return h.msg }

// notFound is every unknown path's answer (lib/sinatra/default_not_found_page.rb).
func notFound(w http.ResponseWriter) {
	writeBody(w, http.StatusNotFound, "application/json", []byte("Requested url was not found"))
}

// writeHalt answers like log_halt: the message as the body, typed JSON only
// if the client accepts JSON unless the route already chose JSON.
func writeHalt(w http.ResponseWriter, r *http.Request, h *halt) {
	ct := w.Header().Get("Content-Type")
	if ct == "" {
		ct = "text/html;charset=utf-8"
	}
	if acceptsJSON(r) {
		ct = "application/json"
	}
	writeBody(w, h.status, ct, []byte(h.msg))
}

func writeBody(w http.ResponseWriter, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	w.Write(body) // the client may have gone; nothing left to tell it
}

// rubyJSON encodes v as Ruby's to_json does: compact, no HTML escaping,
// no trailing newline.
func rubyJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("smartproxy: encode %T: %v", v, err)) // only our own types are encoded
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeBody(w, status, "application/json", rubyJSON(v))
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// tenantName returns the tenant the broker knows this proxy as: the M2
// project. A credential's tenant never changes.
func (s *Server) tenantName(ctx context.Context) (string, error) {
	id, err := s.identity(ctx)
	return id.Tenant, err
}

// identity returns what the broker says about this proxy's credential,
// asked again once identityTTL has passed. When the broker cannot be asked,
// the last answer stands; with none yet, the error says why.
func (s *Server) identity(ctx context.Context) (brokerapi.Identity, error) {
	s.mu.Lock()
	id, at, known := s.id, s.idAt, s.idKnown
	s.mu.Unlock()
	if known && s.now().Sub(at) < identityTTL {
		return id, nil
	}
	// Bounded like a status read: /features must answer Foreman promptly.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Broker.StatusTimeout)
	defer cancel()
	fresh, err := s.broker.Whoami(ctx)
	if err != nil {
		err = fmt.Errorf("cannot ask the appliance's broker at %s who this proxy's tenant is: %w", s.cfg.Broker.URL, err)
		if known {
			// Keep it for another identityTTL rather than make every
			// request wait on an unreachable broker.
			s.mu.Lock()
			s.idAt = s.now()
			s.mu.Unlock()
			s.log.Warn("keeping the broker's last answer", "tenant", id.Tenant, "m2", id.Features.M2, "err", err)
			return id, nil
		}
		return brokerapi.Identity{}, err
	}
	s.mu.Lock()
	s.id, s.idAt, s.idKnown = fresh, s.now(), true
	s.mu.Unlock()
	if known && fresh.Features != id.Features {
		s.log.Info("the appliance's features changed", "m2", fresh.Features.M2)
	}
	return fresh, nil
}

// logged logs every request at info, as Foreman's own proxy does: method,
// path (boot tokens redacted, never the query, which may carry
// credentials), status, duration, the client certificate's CN and
// Foreman's request id.
func (s *Server) logged(next http.Handler) http.Handler {
	return httpx.Logged(s.log, slog.LevelInfo, next)
}

// Addrs are the addresses a running Server listens on; empty when off.
type Addrs struct {
	HTTPS, HTTP, Boot string
}

// Run serves the configured listeners until ctx ends, then shuts them down
// gracefully within smart_proxy.shutdown_timeout. ready, if set, is called
// once every listener accepts connections.
func (s *Server) Run(ctx context.Context, ready func(Addrs)) error {
	type listener struct {
		name string
		ln   net.Listener
		srv  *http.Server
	}
	var ls []listener
	closeAll := func() {
		for _, l := range ls {
			l.ln.Close()
		}
	}
	var addrs Addrs
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	add := func(name, addr string, h http.Handler, tc *tls.Config, out *string) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s on %s: %w", name, addr, err)
		}
		*out = ln.Addr().String()
		if tc != nil {
			ln = tls.NewListener(ln, tc)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			MaxHeaderBytes: 64 << 10, ErrorLog: errLog, TLSConfig: tc}
		ls = append(ls, listener{name, ln, srv})
		return nil
	}
	for _, l := range []struct {
		name, addr string
		h          http.Handler
		tc         *tls.Config
		out        *string
	}{
		{"https", s.cfg.Proxy.HTTPSListen, s.Handler(), s.tls, &addrs.HTTPS},
		{"http", s.cfg.Proxy.HTTPListen, s.Handler(), nil, &addrs.HTTP},
		{"boot", s.cfg.M2.BootListen, s.BootHandler(), nil, &addrs.Boot},
	} {
		if l.name == "boot" && !s.cfg.M2.Enabled {
			continue
		}
		if err := add(l.name, l.addr, l.h, l.tc, l.out); err != nil {
			closeAll()
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range ls {
		s.log.Info("smart-proxy listening", "listener", l.name, "addr", l.ln.Addr().String())
		g.Go(func() error {
			if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve %s on %s: %w", l.name, l.ln.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		s.askUntilKnown(gctx)
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Proxy.ShutdownTimeout)
		defer cancel()
		var errs []error
		for _, l := range ls {
			if err := l.srv.Shutdown(sctx); err != nil {
				errs = append(errs, fmt.Errorf("shut down %s: %w", l.name, err))
			}
		}
		return errors.Join(errs...)
	})
	if ready != nil {
		ready(addrs)
	}
	return g.Wait()
}

// askUntilKnown asks the broker who this proxy's tenant is and which
// features the appliance has until it answers, so that the proxy says early
// what it serves (or why it cannot) and never advertises a guess.
func (s *Server) askUntilKnown(ctx context.Context) {
	wait := 500 * time.Millisecond
	for {
		id, err := s.identity(ctx)
		if err == nil {
			s.log.Info("serving tenant", "tenant", id.Tenant, "broker", s.cfg.Broker.URL,
				"modules", advertised(s.cfg, id))
			return
		}
		s.log.Warn("cannot ask the appliance's broker yet; /features and power answers fail until it answers",
			"err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}
