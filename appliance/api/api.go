// Package api is the admin REST API: nodes, tenants, leases, power,
// handovers, reconcile passes and the audit log under /api/v1, plus
// /healthz and /metrics, behind the admin bearer token. Its answers and
// request bodies go through httpx, its wire types are in api/wire.
package api

import (
	"context"
	_ "embed"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// Prefix is where the admin API's routes live.
const Prefix = "/api/v1"

// SecretStore keeps BMC passwords.
type SecretStore interface {
	Put(ctx context.Context, path string, value []byte) error
	Delete(ctx context.Context, path string) error
}

// API is the admin REST API.
type API struct {
	store      *store.Store
	limits     lease.Limits
	token      string
	log        *slog.Logger
	now        func() time.Time
	reg        *prometheus.Registry
	metrics    *httpMetrics
	secrets    SecretStore
	checker    NodeChecker
	reconciler *reconcile.Reconciler
	power      *power.Plane
	tenants    TenantService
	rs         httpx.Responder
	audits     audit.Recorder
}

// Config is what New needs.
type Config struct {
	Store  *store.Store
	Limits lease.Limits
	// Token is the admin bearer token; every route but /healthz needs it.
	Token  string
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Registry is served on /metrics; a new one when nil.
	Registry *prometheus.Registry
	// Secrets keeps BMC passwords. Routes that need it answer 503 without.
	Secrets SecretStore
	// Checker, if set, checks a node in the allocator before it is
	// registered (HIL: the node exists, is free, its OBM works).
	Checker NodeChecker
	// Reconciler runs a pass on POST /api/v1/reconcile.
	Reconciler *reconcile.Reconciler
	// Power drives nodes for admins; the power routes answer 503 without.
	Power *power.Plane
	// Tenants onboards tenants; nil when [tenants] runtime = none (a new
	// tenant is then a record only, and the onboarding routes answer 503).
	Tenants TenantService
}

// New returns the admin API.
func New(c Config) *API {
	a := &API{store: c.Store, limits: c.Limits, token: c.Token, log: c.Logger, now: c.Now, reg: c.Registry,
		secrets: c.Secrets, checker: c.Checker, reconciler: c.Reconciler, power: c.Power, tenants: c.Tenants}
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
	a.rs = httpx.Responder{Log: a.log, Classify: a.classify}
	a.audits = audit.Recorder{Log: c.Store, Logger: a.log}
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
	r.NotFoundHandler = a.rs.NotFound()
	r.MethodNotAllowedHandler = a.rs.MethodNotAllowed()
	r.Handle("/healthz", a.rs.Handle(a.healthz)).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	// Full paths on the root router, not a PathPrefix subrouter: with
	// mux v1.8.1 a subrouter turns a wrong method into 404 instead of 405.
	v1 := prefixed{r, Prefix}
	v1.Handle("/openapi.json", a.rs.Handle(a.openAPI)).Methods(http.MethodGet)
	v1.Handle("/nodes", a.rs.Handle(a.listNodes)).Methods(http.MethodGet)
	v1.Handle("/nodes", a.rs.Handle(a.createNode)).Methods(http.MethodPost)
	v1.Handle("/nodes/{name}", a.rs.Handle(a.getNode)).Methods(http.MethodGet)
	v1.Handle("/nodes/{name}", a.rs.Handle(a.deleteNode)).Methods(http.MethodDelete)
	v1.Handle("/tenants", a.rs.Handle(a.listTenants)).Methods(http.MethodGet)
	v1.Handle("/tenants", a.rs.Handle(a.createTenant)).Methods(http.MethodPost)
	v1.Handle("/tenants/{name}", a.rs.Handle(a.getTenant)).Methods(http.MethodGet)
	v1.Handle("/tenants/{name}", a.rs.Handle(a.deleteTenant)).Methods(http.MethodDelete)
	a.tenantRoutes(v1)
	v1.Handle("/leases", a.rs.Handle(a.listLeases)).Methods(http.MethodGet)
	v1.Handle("/leases", a.rs.Handle(a.createLease)).Methods(http.MethodPost)
	v1.Handle("/leases/{id}", a.rs.Handle(a.getLease)).Methods(http.MethodGet)
	v1.Handle("/leases/{id}/cancel", a.rs.Handle(a.cancelLease)).Methods(http.MethodPost)
	v1.Handle("/leases/{id}/extend", a.rs.Handle(a.extendLease)).Methods(http.MethodPost)
	v1.Handle("/audit", a.rs.Handle(a.listAudit)).Methods(http.MethodGet)
	a.hardwareRoutes(v1)
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

// secure authenticates every request but GET /healthz with the admin
// bearer token, refuses cross-origin browser writes, and sets headers that
// keep API answers out of caches and browsers' guesses.
func (a *API) secure(next http.Handler) http.Handler {
	return httpx.Protected(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		if !a.Authenticate(r) {
			httpx.Unauthorized(w, "malleable", "missing or invalid bearer token")
			return
		}
		next.ServeHTTP(w, r.WithContext(audit.WithActor(r.Context(), "admin")))
	}))
}

// Metrics is the middleware that counts and times requests by route on
// the API's registry; the appliance's other APIs on its listener use it
// too.
func (a *API) Metrics() mux.MiddlewareFunc { return a.metrics.middleware }

// Authenticate reports whether r bears the admin token.
func (a *API) Authenticate(r *http.Request) bool {
	got, ok := httpx.BearerToken(r)
	return ok && httpx.TokenMatches(got, a.token)
}

// classify maps the store's, the lease domain's and the inventory's errors
// to their answers.
func (a *API) classify(err error) *httpx.Error {
	e := &httpx.Error{Message: err.Error()}
	var ce *lease.ConflictError
	var fe *inventory.FieldError
	switch {
	case errors.As(err, &ce):
		e.Status, e.Extra = http.StatusConflict, map[string]any{"conflict": a.view(ce.Existing)}
	case errors.Is(err, lease.ErrInvalid), errors.Is(err, store.ErrUnknownRef):
		e.Status = http.StatusUnprocessableEntity
	case errors.Is(err, store.ErrNotFound):
		e.Status = http.StatusNotFound
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrInUse), errors.Is(err, lease.ErrIllegalState), errors.Is(err, store.ErrExhausted),
		errors.Is(err, store.ErrJobRunning):
		e.Status = http.StatusConflict
	case errors.As(err, &fe):
		e.Status, e.Extra = http.StatusBadRequest, map[string]any{"fields": inventory.Fields(err)}
	default:
		return nil
	}
	return e
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.store.Ping(ctx); err != nil {
		return &httpx.Error{Status: http.StatusServiceUnavailable, Message: "store unavailable", Cause: err}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// audit records a mutation and its outcome in the audit log.
func (a *API) audit(r *http.Request, action, target, detail string, err error) {
	status := 0
	if err != nil {
		status = a.rs.Resolve(err).Status
	}
	a.audits.Record(r.Context(), audit.Entry{At: a.now(), Actor: audit.Actor(r.Context()), Action: action, Target: target,
		Detail: detail, Result: audit.Result(status, err)})
}

//go:embed openapi.json
var openAPIDoc []byte

func (a *API) openAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPIDoc)
	return err
}

// unavailable is the answer of a route whose part is not configured.
func unavailable(what string) error {
	return httpx.Errorf(http.StatusServiceUnavailable, "%s is not configured", what)
}
