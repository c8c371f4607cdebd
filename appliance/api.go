package appliance

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// secretStore is what the appliance needs from a secret store:
// secrets.FileStore now, Vault later.
type secretStore interface {
	Get(ctx context.Context, path string) ([]byte, error)
	Put(ctx context.Context, path string, value []byte) error
	Delete(ctx context.Context, path string) error
}

// maxBodyBytes bounds every request body the admin API reads.
const maxBodyBytes = 1 << 20

// API is the admin REST API: nodes, tenants, leases and the audit log under
// /api/v1, plus /healthz and /metrics.
type API struct {
	store      *store.Store
	limits     lease.Limits
	token      string
	log        *slog.Logger
	now        func() time.Time
	reg        *prometheus.Registry
	metrics    *httpMetrics
	secrets    secretStore
	alloc      Allocator
	reconciler *Reconciler
	broker     *Broker
	power      *PowerPlane
	m2         *server.Backend
	m2Timeouts server.Timeouts
}

// APIConfig is what NewAPI needs.
type APIConfig struct {
	Store  *store.Store
	Limits lease.Limits
	// Token is the admin bearer token; every route but /healthz needs it.
	Token  string
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Registry receives the API's metrics and is served on /metrics; a new
	// one when nil.
	Registry *prometheus.Registry
	// Secrets keeps BMC passwords. Routes that need it answer 503 without.
	Secrets secretStore
	// Allocator drives power for admins' reads and the tenants' broker.
	// The broker and power routes answer 503 without one.
	Allocator Allocator
	// Reconciler runs a pass on POST /api/v1/reconcile.
	Reconciler *Reconciler
	// StatusCacheTTL is how long the broker serves a node's power from
	// cache; used when Power is nil.
	StatusCacheTTL time.Duration
	// Power is the power plane over Allocator shared with the reconciler;
	// a new one when nil.
	Power *PowerPlane
	// M2 is the embedded M2 backend, served under /m2/v1; none when nil.
	M2 *server.Backend
	// M2Timeouts bound M2's image and disk copies; zero takes M2's defaults.
	M2Timeouts server.Timeouts
}

// NewAPI returns the admin API.
func NewAPI(c APIConfig) *API {
	a := &API{store: c.Store, limits: c.Limits, token: c.Token, log: c.Logger, now: c.Now, reg: c.Registry,
		secrets: c.Secrets, alloc: c.Allocator, reconciler: c.Reconciler, m2: c.M2, m2Timeouts: c.M2Timeouts}
	if a.now == nil {
		a.now = time.Now
	}
	if a.reg == nil {
		a.reg = prometheus.NewRegistry()
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.metrics = newHTTPMetrics(a.reg)
	a.power = c.Power
	if a.power == nil && a.alloc != nil {
		a.power = NewPowerPlane(a.alloc, c.StatusCacheTTL, a.now)
	}
	if a.power != nil {
		a.broker = &Broker{api: a, power: a.power}
		if c.Reconciler != nil && c.Reconciler.Machine != nil {
			a.broker.project = c.Reconciler.Machine.Project
		}
	}
	return a
}

// Handler returns the API's HTTP handler. Authentication, cross-origin
// protection and security headers wrap the router from outside, so they
// also apply to requests that match no route.
func (a *API) Handler() http.Handler {
	return a.secure(a.Router())
}

// Router returns the bare router; tests use it to walk the routes.
func (a *API) Router() *mux.Router {
	r := mux.NewRouter()
	r.Use(a.metrics.middleware)
	r.NotFoundHandler = a.handle(func(http.ResponseWriter, *http.Request) error {
		return &httpError{status: http.StatusNotFound, msg: "no such route"}
	})
	r.MethodNotAllowedHandler = a.handle(func(http.ResponseWriter, *http.Request) error {
		return &httpError{status: http.StatusMethodNotAllowed, msg: "method not allowed on this route"}
	})
	r.Handle("/healthz", a.handle(a.healthz)).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	// Full paths on the root router, not a PathPrefix subrouter: with
	// mux v1.8.1 a subrouter turns a wrong method into 404 instead of 405.
	v1 := prefixed{r, "/api/v1"}
	v1.Handle("/openapi.json", a.handle(a.openAPI)).Methods(http.MethodGet)
	v1.Handle("/nodes", a.handle(a.listNodes)).Methods(http.MethodGet)
	v1.Handle("/nodes", a.handle(a.createNode)).Methods(http.MethodPost)
	v1.Handle("/nodes/{name}", a.handle(a.getNode)).Methods(http.MethodGet)
	v1.Handle("/nodes/{name}", a.handle(a.deleteNode)).Methods(http.MethodDelete)
	v1.Handle("/tenants", a.handle(a.listTenants)).Methods(http.MethodGet)
	v1.Handle("/tenants", a.handle(a.createTenant)).Methods(http.MethodPost)
	v1.Handle("/tenants/{name}", a.handle(a.getTenant)).Methods(http.MethodGet)
	v1.Handle("/tenants/{name}", a.handle(a.deleteTenant)).Methods(http.MethodDelete)
	v1.Handle("/leases", a.handle(a.listLeases)).Methods(http.MethodGet)
	v1.Handle("/leases", a.handle(a.createLease)).Methods(http.MethodPost)
	v1.Handle("/leases/{id}", a.handle(a.getLease)).Methods(http.MethodGet)
	v1.Handle("/leases/{id}/cancel", a.handle(a.cancelLease)).Methods(http.MethodPost)
	v1.Handle("/leases/{id}/extend", a.handle(a.extendLease)).Methods(http.MethodPost)
	v1.Handle("/audit", a.handle(a.listAudit)).Methods(http.MethodGet)
	a.hardwareRoutes(v1)
	a.brokerRoutes(r) // answers 503 when no allocator is configured
	a.m2Routes(r)     // answers 503 when M2 is not enabled
	return r
}

// prefixed registers routes on a router under a path prefix.
type prefixed struct {
	r      *mux.Router
	prefix string
}

func (p prefixed) Handle(path string, h http.Handler) *mux.Route {
	return p.r.Handle(p.prefix+path, h)
}

type actorKey struct{}

// actor returns who made the request, for the audit log.
func actor(ctx context.Context) string {
	if s, ok := ctx.Value(actorKey{}).(string); ok {
		return s
	}
	return "anonymous"
}

// secure authenticates every request but GET /healthz with the admin
// bearer token, refuses cross-origin browser writes, and sets headers that
// keep API answers out of caches and browsers' guesses.
func (a *API) secure(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-origin request refused"})
	}))
	want := []byte(a.token)
	authed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Frame-Options", "DENY")
		if r.URL.Path == "/healthz" && r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, server.Prefix+"/boot/") && r.Method == http.MethodGet {
			// A node's iPXE fetches its boot script with the unguessable
			// per-attach token in the path: its only credential. A
			// tenant's smart-proxy relaying it also sends its own token,
			// and then gets only its own tenant's scripts.
			if tenant, ok := a.tenantFromToken(r); ok {
				r = r.WithContext(context.WithValue(r.Context(), tenantKey{}, tenant))
			}
			next.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/broker/") {
			// Tenants' smart-proxies: the tenant comes from the token.
			tenant, ok := a.tenantFromToken(r)
			if !ok {
				h.Set("WWW-Authenticate", `Bearer realm="malleable-broker"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or invalid tenant token"})
				return
			}
			ctx := context.WithValue(r.Context(), tenantKey{}, tenant)
			ctx = context.WithValue(ctx, actorKey{}, "tenant:"+tenant)
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if strings.HasPrefix(r.URL.Path, server.Prefix+"/") && (!ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1) {
			// The M2 API also takes a tenant's token, scoped to the
			// tenant's own project: that is how its smart-proxy manages
			// the tenant's disks.
			if tenant, ok := a.tenantFromToken(r); ok {
				ctx := context.WithValue(r.Context(), tenantKey{}, tenant)
				ctx = context.WithValue(ctx, actorKey{}, "tenant:"+tenant)
				next.ServeHTTP(w, r.WithContext(ctx))
				return
			}
		}
		if !ok || len(want) == 0 || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			h.Set("WWW-Authenticate", `Bearer realm="malleable"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or invalid bearer token"})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, "admin")))
	})
	return cop.Handler(authed)
}

// httpError is an error with the HTTP status and body it answers with.
// Its cause, if any, is for the log and the audit entry only: the body
// carries msg.
type httpError struct {
	status int
	msg    string
	extra  map[string]any
	cause  error
}

func (e *httpError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *httpError) Unwrap() error { return e.cause }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// handle adapts a handler that returns an error. This is the one place
// where errors become HTTP answers, and where unexpected ones are logged.
func (a *API) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		status, body := a.errorResponse(err)
		if status >= 500 {
			a.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		} else {
			a.log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
		}
		writeJSON(w, status, body)
	})
}

func (a *API) errorResponse(err error) (int, map[string]any) {
	body := map[string]any{"error": err.Error()}
	var he *httpError
	var ce *lease.ConflictError
	var fe *inventory.FieldError
	switch {
	case errors.As(err, &he):
		body["error"] = he.msg
		for k, v := range he.extra {
			body[k] = v
		}
		return he.status, body
	case errors.As(err, &ce):
		body["conflict"] = a.view(ce.Existing)
		return http.StatusConflict, body
	case errors.Is(err, lease.ErrInvalid), errors.Is(err, store.ErrUnknownRef):
		return http.StatusUnprocessableEntity, body
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, body
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrInUse), errors.Is(err, lease.ErrIllegalState), errors.Is(err, store.ErrExhausted):
		return http.StatusConflict, body
	case errors.As(err, &fe):
		body["fields"] = inventory.Fields(err)
		return http.StatusBadRequest, body
	}
	return http.StatusInternalServerError, map[string]any{"error": "internal error; see the appliance log"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client may have gone; nothing left to tell it
}

// decodeJSON strictly decodes one JSON object from the body of r into dst:
// JSON content type, bounded size, no unknown fields, nothing after it.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	return decodeStrict(http.MaxBytesReader(w, r.Body, maxBodyBytes), dst)
}

// checkContentType refuses a body that declares itself as anything but
// JSON. A missing Content-Type is accepted, for curl's sake.
func checkContentType(r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &httpError{status: http.StatusUnsupportedMediaType, msg: "body must be application/json"}
		}
	}
	return nil
}

func decodeStrict(body io.Reader, dst any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body is larger than %d bytes", mbe.Limit)}
		case errors.Is(err, io.EOF):
			return badRequest("body: a JSON object is required")
		case errors.As(err, &se):
			return badRequest("body: malformed JSON at byte %d", se.Offset)
		case errors.As(err, &te):
			return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("%s: must be a JSON %s", te.Field, te.Type), extra: map[string]any{"fields": []string{te.Field}}}
		}
		return badRequest("body: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("body: unexpected data after the JSON object")
	}
	return nil
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.store.Ping(ctx); err != nil {
		return &httpError{status: http.StatusServiceUnavailable, msg: "store unavailable"}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// audit records a mutation and its outcome in the audit log.
func (a *API) audit(r *http.Request, action, target, detail string, err error) {
	result := "ok"
	if err != nil {
		status, _ := a.errorResponse(err)
		result = fmt.Sprintf("refused (%d): %v", status, err)
		if status >= 500 {
			result = "failed: " + err.Error()
		}
	}
	a.record(r, audit.Entry{At: a.now(), Actor: actor(r.Context()), Action: action, Target: target, Detail: detail, Result: result})
}

// record appends e to the audit log.
func (a *API) record(r *http.Request, e audit.Entry) {
	// The request's context may be cancelled by the client: the audit line
	// must be written regardless.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if _, aerr := a.store.AppendAudit(ctx, e); aerr != nil {
		a.log.Error("audit log write failed", "action", e.Action, "target", e.Target, "err", aerr)
	}
}

//go:embed openapi.json
var openAPIDoc []byte

func (a *API) openAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPIDoc)
	return err
}
