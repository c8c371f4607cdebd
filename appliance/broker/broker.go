// Package broker is the single policy point for tenants' smart-proxies
// (/broker/v1): it derives the tenant from the caller's credential, never
// from the request, resolves a node by name or tenant-facing BMC address
// only, and lets a tenant see real power and drive a node only while it
// holds the node's active lease. Tenants get generic reasons; every
// refusal is audited.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// Prefix is where the broker's API is served.
const Prefix = "/broker/v1"

// Config is what New needs.
type Config struct {
	Store *store.Store
	// Power drives nodes; every route answers 503 without one (no
	// allocator configured).
	Power *power.Plane
	// Project names a tenant's allocator project; nil skips the project
	// check before a command.
	Project func(tenant string) string
	// M2 says whether the M2 backend is on, for whoami's features.
	M2 bool
	// Middleware wraps every route (the appliance's request metrics).
	Middleware mux.MiddlewareFunc
	Logger     *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Broker serves /broker/v1. A power command holds its node's gate from the
// holder check to the end of the BMC call, and a fence waits for the gate,
// so everyone but the holder reads "off" and their commands never reach a
// BMC.
type Broker struct {
	store   *store.Store
	power   *power.Plane
	project func(tenant string) string
	m2      bool
	mw      mux.MiddlewareFunc
	log     *slog.Logger
	now     func() time.Time
	rs      httpx.Responder
	audit   audit.Recorder
}

// New returns the broker.
func New(c Config) *Broker {
	b := &Broker{store: c.Store, power: c.Power, project: c.Project, m2: c.M2, mw: c.Middleware, log: c.Logger, now: c.Now}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.rs = httpx.Responder{Log: b.log, Classify: classify}
	if c.Store != nil {
		b.audit = audit.Recorder{Log: c.Store, Logger: b.log}
	}
	return b
}

// classify maps the broker's domain errors: a malformed field is the
// caller's mistake; anything else unexpected is the appliance's.
func classify(err error) *httpx.Error {
	var fe *inventory.FieldError
	if errors.As(err, &fe) {
		return &httpx.Error{Status: http.StatusBadRequest, Message: err.Error(), Extra: map[string]any{"fields": inventory.Fields(err)}}
	}
	return nil
}

type tenantKey struct{}

// Tenant returns the tenant the request's credential belongs to, "" if
// it is not a tenant's.
func Tenant(ctx context.Context) string {
	s, _ := ctx.Value(tenantKey{}).(string)
	return s
}

// WithTenant returns ctx acting for tenant: its actor is "tenant:NAME".
func WithTenant(ctx context.Context, tenant string) context.Context {
	return audit.WithActor(context.WithValue(ctx, tenantKey{}, tenant), "tenant:"+tenant)
}

// Authenticate resolves the request's bearer token to its tenant. Only a
// token's SHA-256 is stored, and the lookup is by that hash, so no secret
// is compared byte by byte.
func Authenticate(st *store.Store, r *http.Request) (string, bool) {
	tok, ok := httpx.BearerToken(r)
	if !ok || len(tok) < 16 {
		return "", false
	}
	tenant, err := st.TenantByToken(r.Context(), store.TokenHash(tok))
	return tenant, err == nil
}

// Handler returns the broker's API: tenant authentication, cross-origin
// protection and security headers around the routes.
func (b *Broker) Handler() http.Handler { return b.secure(b.Router()) }

// Router returns the bare router; tests use it to walk the routes.
func (b *Broker) Router() *mux.Router {
	r := mux.NewRouter()
	if b.mw != nil {
		r.Use(b.mw)
	}
	r.NotFoundHandler = b.rs.NotFound()
	r.MethodNotAllowedHandler = b.rs.MethodNotAllowed()
	h := func(action string, f func(*Broker, http.ResponseWriter, *http.Request) error) http.Handler {
		return b.rs.Handle(func(w http.ResponseWriter, r *http.Request) error {
			if b.power == nil {
				return httpx.Errorf(http.StatusServiceUnavailable, "no allocator configured")
			}
			err := f(b, w, r)
			var done auditedError
			if err != nil && !errors.As(err, &done) {
				b.record(r, action, refTarget(mux.Vars(r)["ref"]), err)
			}
			return err
		})
	}
	r.Handle(Prefix+"/whoami", h("broker.whoami", (*Broker).whoami)).Methods(http.MethodGet)
	r.Handle(Prefix+"/nodes", h("broker.nodes", (*Broker).nodes)).Methods(http.MethodGet)
	r.Handle(Prefix+"/nodes/{ref}/power", h("power.status", (*Broker).powerStatus)).Methods(http.MethodGet)
	r.Handle(Prefix+"/nodes/{ref}/power", h("power", (*Broker).powerAction)).Methods(http.MethodPut)
	r.Handle(Prefix+"/nodes/{ref}/boot-device", h("bootdevice", (*Broker).bootDevice)).Methods(http.MethodPut)
	return r
}

// secure lets only tenants' credentials in; the tenant comes from the
// token.
func (b *Broker) secure(next http.Handler) http.Handler {
	return httpx.Protected(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := Authenticate(b.store, r)
		if !ok {
			httpx.Unauthorized(w, "malleable-broker", "missing or invalid tenant token")
			return
		}
		next.ServeHTTP(w, r.WithContext(WithTenant(r.Context(), tenant)))
	}))
}

// record audits a tenant's request and its outcome.
func (b *Broker) record(r *http.Request, action, target string, err error) {
	status := 0
	if err != nil {
		status = b.rs.Resolve(err).Status
	}
	b.audit.Record(r.Context(), audit.Entry{At: b.now(), Actor: audit.Actor(r.Context()), Action: action, Target: target,
		Detail: "by tenant " + Tenant(r.Context()), Result: audit.Result(status, err)})
}

// auditedError is an error its handler has already audited.
type auditedError struct{ error }

func (e auditedError) Unwrap() error { return e.error }

// refTarget is the audit target of a tenant's node reference; only a
// well-formed one is recorded verbatim.
func refTarget(ref string) string {
	if ref == "" {
		return "broker"
	}
	if inventory.ValidateText("ref", ref, 255) != nil {
		return "node/(invalid ref)"
	}
	return "node/" + ref
}

// whoami names the caller's tenant and the appliance's optional features,
// so that a smart-proxy advertises to Foreman only what the appliance
// serves (m2 only while the M2 backend is on).
func (b *Broker) whoami(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, brokerapi.Identity{Tenant: Tenant(r.Context()), Features: brokerapi.Features{M2: b.m2}})
	return nil
}

// access is what a tenant may do with a node now.
type access struct {
	node inventory.Node
	held bool
	// next is the start of the tenant's next lease of the node, if it is
	// still ahead.
	next *time.Time
	// handingOver: the node is between holders (a handover is open, or
	// the tenant's lease has begun and its handover has not run yet).
	handingOver bool
}

// resolve finds the node ref names for tenant: its name or its
// tenant-facing BMC address, exactly. A node the tenant never leased is
// reported as not found, like an unknown one, and a refusal names only
// what the tenant asked for.
func (b *Broker) resolve(ctx context.Context, tenant, ref string) (inventory.Node, error) {
	if err := inventory.ValidateText("node", ref, 255); err != nil || ref == "" {
		return inventory.Node{}, httpx.BadRequest("node: a node name or BMC address is required")
	}
	n, err := b.store.FindNode(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return n, notLeased(ref, tenant)
	}
	return n, err
}

func notLeased(ref, tenant string) error {
	return httpx.Errorf(http.StatusNotFound, "node %q is not leased to %s", ref, tenant)
}

// access decides what tenant may do with node n, which it named ref, at
// now.
func (b *Broker) access(ctx context.Context, tenant, ref string, n inventory.Node) (access, error) {
	a := access{node: n}
	now := b.now()
	l, found, err := b.store.NextLease(ctx, n.Name, tenant, now)
	if err != nil {
		return a, err
	}
	if !found {
		// A node the tenant never leased is none of its business: it
		// looks exactly like one that does not exist. A node it leased
		// before reads "off".
		leased, err := b.store.HasLeased(ctx, n.Name, tenant)
		if err != nil {
			return a, err
		}
		if !leased {
			return a, notLeased(ref, tenant)
		}
	}
	started := found && !l.Start.After(now)
	if started {
		holder, err := b.store.Holder(ctx, n.Name)
		if err != nil {
			return a, err
		}
		a.held = holder == tenant
	}
	if a.held {
		return a, nil
	}
	if found && !started {
		start := l.Start
		a.next = &start
	}
	open, err := b.store.HandoverOpen(ctx, n.Name)
	if err != nil {
		return a, err
	}
	a.handingOver = started || open
	return a, nil
}

// refusal explains why tenant may not act on a node.
func (a access) refusal(tenant string) error {
	msg := fmt.Sprintf("node %s is not leased to %s now", a.node.Name, tenant)
	extra := map[string]any{"node": a.node.Name}
	if a.handingOver {
		msg = fmt.Sprintf("node %s is being handed over", a.node.Name)
		extra["handover"] = true
	}
	switch {
	case a.next != nil:
		when := a.next.UTC().Format(time.RFC3339)
		msg += "; its next lease to " + tenant + " starts " + when
		extra["next_lease_start"] = when
	case !a.handingOver:
		msg += " and has no lease of it ahead"
	}
	return &httpx.Error{Status: http.StatusForbidden, Message: msg, Extra: extra}
}

func (b *Broker) nodes(w http.ResponseWriter, r *http.Request) error {
	tenant := Tenant(r.Context())
	now := b.now()
	ls, err := b.store.ListLeases(r.Context(), store.LeaseFilter{Tenant: tenant, From: now, Now: now})
	if err != nil {
		return err
	}
	out := []brokerapi.Lease{}
	for _, l := range ls {
		if l.Cancelled {
			continue
		}
		n, err := b.store.GetNode(r.Context(), l.Node)
		if err != nil {
			return err
		}
		out = append(out, brokerapi.Lease{Node: n.Name, BMCAddress: n.TenantBMCAddress, MACs: n.MACs,
			Start: l.Start, End: l.End, State: string(l.StateAt(now))})
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (b *Broker) powerStatus(w http.ResponseWriter, r *http.Request) error {
	tenant := Tenant(r.Context())
	ref := mux.Vars(r)["ref"]
	n, err := b.resolve(r.Context(), tenant, ref)
	if err != nil {
		return err
	}
	a, err := b.access(r.Context(), tenant, ref, n)
	if err != nil {
		return err
	}
	body := brokerapi.Power{Node: a.node.Name, Power: "off", Held: a.held, Handover: a.handingOver}
	if a.next != nil {
		next := a.next.UTC()
		body.NextLeaseStart = &next
	}
	if a.held {
		p, err := b.power.Status(r.Context(), a.node.Name)
		if err != nil {
			b.log.WarnContext(r.Context(), "power status failed", "node", a.node.Name, "tenant", tenant, "err", err)
			return power.AnswerError(a.node.Name, err, true)
		}
		if p.On {
			body.Power = "on"
		}
		if p.Stale {
			body.Stale, body.AgeSeconds = true, int(b.now().Sub(p.At).Seconds())
		}
	}
	httpx.WriteJSON(w, http.StatusOK, body)
	return nil
}

func (b *Broker) powerAction(w http.ResponseWriter, r *http.Request) error {
	var req brokerapi.PowerRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	action, err := node.ParsePowerAction(req.Action)
	if err != nil {
		return &inventory.FieldError{Field: "action", Reason: err.Error()}
	}
	return b.act(w, r, "power."+string(action), func(ctx context.Context, node string) error {
		return b.power.Power(ctx, node, action)
	}, func(node string) any { return brokerapi.PowerResult{Action: string(action), Node: node, Result: true} })
}

func (b *Broker) bootDevice(w http.ResponseWriter, r *http.Request) error {
	var req brokerapi.BootRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	dev, err := node.ParseBootDevice(req.Device)
	if err != nil {
		return &inventory.FieldError{Field: "device", Reason: err.Error()}
	}
	return b.act(w, r, "bootdevice."+string(dev), func(ctx context.Context, node string) error {
		return b.power.SetBootDevice(ctx, node, dev, req.Persistent)
	}, func(node string) any {
		return brokerapi.BootResult{Device: string(dev), Persistent: req.Persistent, Node: node, Result: true}
	})
}

// act runs do on the node if the caller holds it, auditing either way. The
// holder check and do run under the node's gate, so a fence cannot come
// between them.
func (b *Broker) act(w http.ResponseWriter, r *http.Request, action string, do func(context.Context, string) error, answer func(node string) any) error {
	tenant, ref := Tenant(r.Context()), mux.Vars(r)["ref"]
	n, err := b.resolve(r.Context(), tenant, ref)
	if err != nil {
		b.record(r, action, refTarget(ref), err)
		return auditedError{err}
	}
	err = b.power.Command(r.Context(), n.Name, func(ctx context.Context) error {
		return b.actHeld(ctx, tenant, ref, n, do)
	})
	target := "node/" + n.Name
	if he := (*httpx.Error)(nil); errors.As(err, &he) && he.Status == http.StatusNotFound {
		target = refTarget(ref) // a node the tenant never leased keeps its name
	}
	b.record(r, action, target, err)
	if err != nil {
		var he *httpx.Error
		if !errors.As(err, &he) || he.Status >= 500 || he.Cause != nil {
			b.log.WarnContext(r.Context(), "tenant command failed", "action", action, "node", n.Name, "tenant", tenant, "err", err)
		}
		return auditedError{err}
	}
	httpx.WriteJSON(w, http.StatusOK, answer(n.Name))
	return nil
}

// actHeld checks that tenant holds n and runs do; the caller holds the
// node's gate.
func (b *Broker) actHeld(ctx context.Context, tenant, ref string, n inventory.Node, do func(context.Context, string) error) error {
	a, err := b.access(ctx, tenant, ref, n)
	if err != nil {
		return err
	}
	if !a.held {
		return a.refusal(tenant)
	}
	if b.project != nil {
		if err := b.power.VerifyProject(ctx, n.Name, b.project(tenant)); err != nil {
			return &httpx.Error{Status: http.StatusConflict, Cause: err,
				Message: fmt.Sprintf("node %s: power control refused: the node is not in %s's project", n.Name, tenant)}
		}
	}
	if err := do(ctx, n.Name); err != nil {
		return power.AnswerError(n.Name, err, true)
	}
	return nil
}
