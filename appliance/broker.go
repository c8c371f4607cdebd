package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// Broker is the single policy point for tenants' smart-proxies: it derives
// the tenant from the caller's credential, never from the request, and lets
// a tenant see real power and drive a node only while it holds the node's
// active lease. Everyone else reads "off", and their commands never reach a
// BMC: a command holds its node's gate from the holder check to the end of
// the BMC call, and a fence waits for the gate.
type Broker struct {
	api   *API
	power *PowerPlane
	// project names a tenant's allocator project; nil skips the project
	// check before a command.
	project func(tenant string) string
}

// projectVerifier is implemented by allocators that can confirm, just
// before a command, that a node is in its holder's project (HIL: another
// party may have moved it).
type projectVerifier interface {
	VerifyProject(ctx context.Context, node, project string) error
}

type tenantKey struct{}

func tenantOf(ctx context.Context) string {
	s, _ := ctx.Value(tenantKey{}).(string)
	return s
}

// brokerRoutes mounts the broker under /broker/v1 on r. The handlers reach
// the configured broker through the API, answering 503 if there is none.
// Every refused request is audited.
func (api *API) brokerRoutes(r *mux.Router) {
	v1 := prefixed{r, "/broker/v1"}
	h := func(action string, f func(*Broker, http.ResponseWriter, *http.Request) error) http.Handler {
		return api.handle(func(w http.ResponseWriter, r *http.Request) error {
			if api.broker == nil {
				return &httpError{status: http.StatusServiceUnavailable, msg: "no allocator configured"}
			}
			err := f(api.broker, w, r)
			var done auditedError
			if err != nil && !errors.As(err, &done) {
				api.audit(r, action, refTarget(mux.Vars(r)["ref"]), "by tenant "+tenantOf(r.Context()), err)
			}
			return err
		})
	}
	v1.Handle("/whoami", h("broker.whoami", (*Broker).whoami)).Methods(http.MethodGet)
	v1.Handle("/nodes", h("broker.nodes", (*Broker).nodes)).Methods(http.MethodGet)
	v1.Handle("/nodes/{ref}/power", h("power.status", (*Broker).powerStatus)).Methods(http.MethodGet)
	v1.Handle("/nodes/{ref}/power", h("power", (*Broker).powerAction)).Methods(http.MethodPut)
	v1.Handle("/nodes/{ref}/boot-device", h("bootdevice", (*Broker).bootDevice)).Methods(http.MethodPut)
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

// tenantFromToken resolves a broker bearer token to its tenant. Only the
// token's SHA-256 is stored, and the lookup is by that hash, so no secret
// is compared byte by byte.
func (a *API) tenantFromToken(r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	if !ok || len(tok) < 16 {
		return "", false
	}
	tenant, err := a.store.TenantByToken(r.Context(), store.TokenHash(tok))
	return tenant, err == nil
}

// whoami names the caller's tenant and the appliance's optional features,
// so that a smart-proxy advertises to Foreman only what the appliance
// serves (m2 only while the M2 backend is on).
func (b *Broker) whoami(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"tenant": tenantOf(r.Context()),
		"features": map[string]bool{"m2": b.api.m2 != nil}})
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
		return inventory.Node{}, &httpError{status: http.StatusBadRequest, msg: "node: a node name or BMC address is required"}
	}
	n, err := b.api.store.FindNode(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return n, notLeased(ref, tenant)
	}
	return n, err
}

func notLeased(ref, tenant string) error {
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("node %q is not leased to %s", ref, tenant)}
}

// access decides what tenant may do with node n, which it named ref, at
// now.
func (b *Broker) access(ctx context.Context, tenant, ref string, n inventory.Node) (access, error) {
	a := access{node: n}
	now := b.api.now()
	l, found, err := b.api.store.NextLease(ctx, n.Name, tenant, now)
	if err != nil {
		return a, err
	}
	if !found {
		// A node the tenant never leased is none of its business: it
		// looks exactly like one that does not exist. A node it leased
		// before reads "off".
		leased, err := b.api.store.HasLeased(ctx, n.Name, tenant)
		if err != nil {
			return a, err
		}
		if !leased {
			return a, notLeased(ref, tenant)
		}
	}
	started := found && !l.Start.After(now)
	if started {
		holder, err := b.api.store.Holder(ctx, n.Name)
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
	open, err := b.api.store.HandoverOpen(ctx, n.Name)
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
	return &httpError{status: http.StatusForbidden, msg: msg, extra: extra}
}

// brokerNode is one entry of GET /broker/v1/nodes: what a tenant may know
// of a node it leases. BMCAddress is the node's tenant-facing address, the
// one its Foreman stores; the real BMC's address, port and user never
// reach a tenant.
type brokerNode struct {
	Node       string    `json:"node"`
	BMCAddress string    `json:"bmc_address,omitempty"`
	MACs       []string  `json:"macs"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	State      string    `json:"state"`
}

func (b *Broker) nodes(w http.ResponseWriter, r *http.Request) error {
	tenant := tenantOf(r.Context())
	now := b.api.now()
	ls, err := b.api.store.ListLeases(r.Context(), store.LeaseFilter{Tenant: tenant, From: now, Now: now})
	if err != nil {
		return err
	}
	out := []brokerNode{}
	for _, l := range ls {
		if l.Cancelled {
			continue
		}
		n, err := b.api.store.GetNode(r.Context(), l.Node)
		if err != nil {
			return err
		}
		out = append(out, brokerNode{Node: n.Name, BMCAddress: n.TenantBMCAddress, MACs: n.MACs,
			Start: l.Start, End: l.End, State: string(l.StateAt(now))})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (b *Broker) powerStatus(w http.ResponseWriter, r *http.Request) error {
	tenant := tenantOf(r.Context())
	ref := mux.Vars(r)["ref"]
	n, err := b.resolve(r.Context(), tenant, ref)
	if err != nil {
		return err
	}
	a, err := b.access(r.Context(), tenant, ref, n)
	if err != nil {
		return err
	}
	body := map[string]any{"node": a.node.Name, "power": "off", "held": a.held}
	if a.next != nil {
		body["next_lease_start"] = a.next.UTC().Format(time.RFC3339)
	}
	if a.handingOver {
		body["handover"] = true
	}
	if a.held {
		p, err := b.power.cache.status(r.Context(), a.node.Name)
		if err != nil {
			b.api.log.WarnContext(r.Context(), "power status failed", "node", a.node.Name, "tenant", tenant, "err", err)
			return powerError(a.node.Name, err, true)
		}
		if p.On {
			body["power"] = "on"
		}
		if p.Stale {
			body["stale"] = true
			body["age_seconds"] = int(b.api.now().Sub(p.At).Seconds())
		}
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// powerRequest is the body of PUT /broker/v1/nodes/{ref}/power.
type powerRequest struct {
	Action string `json:"action"`
}

func (b *Broker) powerAction(w http.ResponseWriter, r *http.Request) error {
	var req powerRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	action, err := node.ParsePowerAction(req.Action)
	if err != nil {
		return &inventory.FieldError{Field: "action", Reason: err.Error()}
	}
	return b.act(w, r, "power."+string(action), func(ctx context.Context, node string) error {
		return b.power.power(ctx, node, action)
	}, map[string]any{"action": string(action)})
}

// bootRequest is the body of PUT /broker/v1/nodes/{ref}/boot-device.
type bootRequest struct {
	Device     string `json:"device"`
	Persistent bool   `json:"persistent"`
}

func (b *Broker) bootDevice(w http.ResponseWriter, r *http.Request) error {
	var req bootRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	dev, err := node.ParseBootDevice(req.Device)
	if err != nil {
		return &inventory.FieldError{Field: "device", Reason: err.Error()}
	}
	return b.act(w, r, "bootdevice."+string(dev), func(ctx context.Context, node string) error {
		return b.power.alloc.SetBootDevice(ctx, node, dev, req.Persistent)
	}, map[string]any{"device": string(dev), "persistent": req.Persistent})
}

// act runs do on the node if the caller holds it, auditing either way. The
// holder check and do run under the node's gate, so a fence cannot come
// between them.
func (b *Broker) act(w http.ResponseWriter, r *http.Request, action string, do func(context.Context, string) error, body map[string]any) error {
	tenant, ref := tenantOf(r.Context()), mux.Vars(r)["ref"]
	n, err := b.resolve(r.Context(), tenant, ref)
	if err != nil {
		b.api.audit(r, action, refTarget(ref), "by tenant "+tenant, err)
		return auditedError{err}
	}
	// Not the request's context: a smart-proxy that hangs up must not let
	// the gate go while the allocator still carries the command out.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), commandTimeout)
	defer cancel()
	release := b.power.shared(n.Name)
	err = b.actHeld(ctx, tenant, ref, n, do)
	release()
	target := "node/" + n.Name
	if he := (*httpError)(nil); errors.As(err, &he) && he.status == http.StatusNotFound {
		target = refTarget(ref) // a node the tenant never leased keeps its name
	}
	b.api.audit(r, action, target, "by tenant "+tenant, err)
	if err != nil {
		var he *httpError
		if !errors.As(err, &he) || he.status >= 500 || he.cause != nil {
			b.api.log.WarnContext(r.Context(), "tenant command failed", "action", action, "node", n.Name, "tenant", tenant, "err", err)
		}
		return auditedError{err}
	}
	body["node"], body["result"] = n.Name, true
	writeJSON(w, http.StatusOK, body)
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
	if v, ok := b.power.alloc.(projectVerifier); ok && b.project != nil {
		if err := v.VerifyProject(ctx, n.Name, b.project(tenant)); err != nil {
			return &httpError{status: http.StatusConflict, cause: err,
				msg: fmt.Sprintf("node %s: power control refused: the node is not in %s's project", n.Name, tenant)}
		}
	}
	if err := do(ctx, n.Name); err != nil {
		return powerError(n.Name, err, true)
	}
	return nil
}

// powerError turns allocator errors into answers. A tenant gets its node's
// name and a generic reason; the cause (which may name a real BMC) stays
// in the error for the log and the audit entry, and an admin sees it.
func powerError(name string, err error, tenant bool) error {
	e := &httpError{status: http.StatusBadGateway, msg: fmt.Sprintf("node %s: power control failed", name), cause: err}
	switch {
	case errors.Is(err, node.ErrNoPowerControl):
		e.status, e.msg = http.StatusConflict, fmt.Sprintf("node %s has no power control", name)
	case errors.Is(err, node.ErrBadArgument):
		e.status, e.msg = http.StatusBadRequest, fmt.Sprintf("node %s: the request was refused as invalid", name)
	case errors.Is(err, node.ErrBlocked), errors.Is(err, node.ErrOwned):
		e.status, e.msg = http.StatusConflict, fmt.Sprintf("node %s: power control refused", name)
	}
	if !tenant {
		e.msg += ": " + err.Error()
		e.cause = nil
	}
	return e
}
