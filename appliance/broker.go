package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"golang.org/x/sync/singleflight"

	"github.com/malleable-cloud/malleable/appliance/hil"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// Broker is the single policy point for tenants' smart-proxies: it derives
// the tenant from the caller's credential, never from the request, and lets
// a tenant see real power and drive a node only while it holds the node's
// active lease. Everyone else reads "off", and their commands never reach a
// BMC.
type Broker struct {
	api   *API
	alloc Allocator
	cache *powerCache
}

type tenantKey struct{}

func tenantOf(ctx context.Context) string {
	s, _ := ctx.Value(tenantKey{}).(string)
	return s
}

// brokerRoutes mounts the broker under /broker/v1 on r. The handlers reach
// the configured broker through the API, answering 503 if there is none.
func (api *API) brokerRoutes(r *mux.Router) {
	v1 := prefixed{r, "/broker/v1"}
	h := func(f func(*Broker, http.ResponseWriter, *http.Request) error) http.Handler {
		return api.handle(func(w http.ResponseWriter, r *http.Request) error {
			if api.broker == nil {
				return &httpError{status: http.StatusServiceUnavailable, msg: "no allocator configured"}
			}
			return f(api.broker, w, r)
		})
	}
	v1.Handle("/whoami", h((*Broker).whoami)).Methods(http.MethodGet)
	v1.Handle("/nodes", h((*Broker).nodes)).Methods(http.MethodGet)
	v1.Handle("/nodes/{ref}/power", h((*Broker).powerStatus)).Methods(http.MethodGet)
	v1.Handle("/nodes/{ref}/power", h((*Broker).power)).Methods(http.MethodPut)
	v1.Handle("/nodes/{ref}/boot-device", h((*Broker).bootDevice)).Methods(http.MethodPut)
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
	// next is the start of the tenant's next lease of the node, if any.
	next *time.Time
}

// access resolves ref (a node name or BMC host) for tenant at now. A node
// the tenant never leased is reported as not found, like an unknown one.
func (b *Broker) access(ctx context.Context, tenant, ref string) (access, error) {
	var a access
	if err := inventory.ValidateText("node", ref, 255); err != nil || ref == "" {
		return a, &httpError{status: http.StatusBadRequest, msg: "node: a node name or BMC address is required"}
	}
	notLeased := &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("node %q is not leased to %s", ref, tenant)}
	n, err := b.api.store.FindNode(ctx, ref)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return a, notLeased
	case errors.Is(err, store.ErrAmbiguous):
		return a, &httpError{status: http.StatusConflict, msg: err.Error()}
	case err != nil:
		return a, err
	}
	a.node = n
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
			return a, notLeased
		}
	}
	if found {
		if !l.Start.After(now) {
			holder, err := b.api.store.Holder(ctx, n.Name)
			if err != nil {
				return a, err
			}
			a.held = holder == tenant
		}
		if !a.held {
			start := l.Start
			a.next = &start
		}
	}
	return a, nil
}

// refusal explains why tenant may not act on a node.
func (a access) refusal(tenant string) error {
	msg := fmt.Sprintf("node %s is not leased to %s now", a.node.Name, tenant)
	extra := map[string]any{"node": a.node.Name}
	if a.next != nil {
		when := a.next.UTC().Format(time.RFC3339)
		msg += "; its next lease to " + tenant + " starts " + when
		extra["next_lease_start"] = when
	} else {
		msg += " and has no lease of it ahead"
	}
	return &httpError{status: http.StatusForbidden, msg: msg, extra: extra}
}

func (b *Broker) nodes(w http.ResponseWriter, r *http.Request) error {
	tenant := tenantOf(r.Context())
	now := b.api.now()
	ls, err := b.api.store.ListLeases(r.Context(), store.LeaseFilter{Tenant: tenant, From: now, Now: now})
	if err != nil {
		return err
	}
	type entry struct {
		Node    string    `json:"node"`
		BMCHost string    `json:"bmc_host,omitempty"`
		MACs    []string  `json:"macs"`
		Start   time.Time `json:"start"`
		End     time.Time `json:"end"`
		State   string    `json:"state"`
	}
	out := []entry{}
	for _, l := range ls {
		if l.Cancelled {
			continue
		}
		n, err := b.api.store.GetNode(r.Context(), l.Node)
		if err != nil {
			return err
		}
		out = append(out, entry{Node: n.Name, BMCHost: n.BMC.Host, MACs: n.MACs, Start: l.Start, End: l.End, State: string(l.StateAt(now))})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (b *Broker) powerStatus(w http.ResponseWriter, r *http.Request) error {
	tenant := tenantOf(r.Context())
	a, err := b.access(r.Context(), tenant, mux.Vars(r)["ref"])
	if err != nil {
		return err
	}
	body := map[string]any{"node": a.node.Name, "power": "off", "held": a.held}
	if a.next != nil {
		body["next_lease_start"] = a.next.UTC().Format(time.RFC3339)
	}
	if a.held {
		on, err := b.cache.status(r.Context(), a.node.Name)
		if err != nil {
			return powerError(a.node.Name, err)
		}
		if on {
			body["power"] = "on"
		}
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// powerRequest is the body of PUT /broker/v1/nodes/{ref}/power.
type powerRequest struct {
	Action string `json:"action"`
}

func (b *Broker) power(w http.ResponseWriter, r *http.Request) error {
	var req powerRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	action, err := hil.ParsePowerAction(req.Action)
	if err != nil {
		return &inventory.FieldError{Field: "action", Reason: err.Error()}
	}
	return b.act(w, r, "power."+string(action), func(ctx context.Context, node string) error {
		defer b.cache.forget(node)
		return b.alloc.Power(ctx, node, action)
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
	dev, err := hil.ParseBootDevice(req.Device)
	if err != nil {
		return &inventory.FieldError{Field: "device", Reason: err.Error()}
	}
	return b.act(w, r, "bootdevice."+string(dev), func(ctx context.Context, node string) error {
		return b.alloc.SetBootDevice(ctx, node, dev, req.Persistent)
	}, map[string]any{"device": string(dev), "persistent": req.Persistent})
}

// act runs do on the node if the caller holds it, auditing either way.
func (b *Broker) act(w http.ResponseWriter, r *http.Request, action string, do func(context.Context, string) error, body map[string]any) error {
	tenant := tenantOf(r.Context())
	a, err := b.access(r.Context(), tenant, mux.Vars(r)["ref"])
	if err != nil {
		return err
	}
	if !a.held {
		err := a.refusal(tenant)
		b.api.audit(r, action, "node/"+a.node.Name, "by tenant "+tenant, err)
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	err = do(ctx, a.node.Name)
	b.api.audit(r, action, "node/"+a.node.Name, "by tenant "+tenant, err)
	if err != nil {
		return powerError(a.node.Name, err)
	}
	body["node"], body["result"] = a.node.Name, true
	writeJSON(w, http.StatusOK, body)
	return nil
}

// powerError turns allocator errors into answers a smart-proxy can relay.
func powerError(node string, err error) error {
	switch {
	case errors.Is(err, hil.ErrNoPowerControl):
		return &httpError{status: http.StatusConflict, msg: fmt.Sprintf("node %s has no power control", node)}
	case errors.Is(err, hil.ErrBadArgument):
		return &httpError{status: http.StatusBadRequest, msg: err.Error()}
	case errors.Is(err, hil.ErrBlocked), errors.Is(err, hil.ErrOwned):
		return &httpError{status: http.StatusConflict, msg: err.Error()}
	}
	return &httpError{status: http.StatusBadGateway, msg: fmt.Sprintf("node %s: power control failed: %v", node, err)}
}

// powerCache remembers each node's power state for ttl, so status queries
// (Foreman shows N/A past 3 s) are answered without a BMC round trip, and
// concurrent misses for one node share one BMC call.
type powerCache struct {
	alloc Allocator
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	entries map[string]powerEntry
	group   singleflight.Group
}

type powerEntry struct {
	on bool
	at time.Time
}

func newPowerCache(alloc Allocator, ttl time.Duration, now func() time.Time) *powerCache {
	return &powerCache{alloc: alloc, ttl: ttl, now: now, entries: map[string]powerEntry{}}
}

func (c *powerCache) status(ctx context.Context, node string) (bool, error) {
	c.mu.Lock()
	e, ok := c.entries[node]
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < c.ttl {
		return e.on, nil
	}
	v, err, _ := c.group.Do(node, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2500*time.Millisecond)
		defer cancel()
		on, err := c.alloc.PowerStatus(ctx, node)
		if err != nil {
			return false, err
		}
		c.mu.Lock()
		c.entries[node] = powerEntry{on: on, at: c.now()}
		c.mu.Unlock()
		return on, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

func (c *powerCache) forget(node string) {
	c.mu.Lock()
	delete(c.entries, node)
	c.mu.Unlock()
}
