// Package client is a Go client of the appliance's admin REST API. The CLI
// uses it, and so can scripts and tests; it speaks only HTTP, never to the
// store.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

// Client calls one appliance's admin API.
type Client struct {
	c httpx.Caller
}

// WithTimeout returns a copy of c whose requests may take up to d (image
// uploads take longer than the default 30 s).
func (c *Client) WithTimeout(d time.Duration) *Client {
	cp := *c
	cp.c.HTTP = &http.Client{Timeout: d}
	return &cp
}

// M2 returns a client of the appliance's M2 API (/m2/v1) with c's
// address, token and timeout.
func (c *Client) M2() *m2.Client { return m2.NewClient(c.c.Base, c.c.Token, c.c.HTTP) }

// New returns a client of the API at baseURL (for example
// http://127.0.0.1:8780) authenticating with token.
func New(baseURL, token string) *Client {
	return &Client{c: httpx.Caller{Base: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}}
}

// Error is an error answer of the admin API: the answer's status and
// message, with the fields it names. It unwraps to the *httpx.StatusError
// it was read from.
type Error struct {
	Status  int
	Message string
	Fields  []string
	// Conflict is the existing lease a refused lease collides with.
	Conflict *Lease

	answer *httpx.StatusError
}

// Error returns the API's message and the HTTP status.
func (e *Error) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Unwrap returns the answer the error was read from.
func (e *Error) Unwrap() error {
	if e.answer == nil {
		return nil
	}
	return e.answer
}

// do sends in (if not nil) as JSON and decodes a JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.doStatus(ctx, method, path, in, out)
	return err
}

// doStatus is do that also returns the status of a successful answer.
func (c *Client) doStatus(ctx context.Context, method, path string, in, out any) (int, error) {
	status, err := c.c.DoStatus(ctx, method, path, in, out)
	return status, apiError(err)
}

// apiError reads the admin API's own fields from an error answer.
func apiError(err error) error {
	var se *httpx.StatusError
	if !errors.As(err, &se) {
		return err
	}
	e := &Error{Status: se.Status, Message: se.Message, answer: se}
	var body struct {
		Fields   []string `json:"fields"`
		Conflict *Lease   `json:"conflict"`
	}
	if json.Unmarshal(se.Body, &body) == nil {
		e.Fields, e.Conflict = body.Fields, body.Conflict
	}
	return e
}

// CreateNode registers a node.
func (c *Client) CreateNode(ctx context.Context, n NodeSpec) (inventory.Node, error) {
	var out inventory.Node
	return out, c.do(ctx, http.MethodPost, "/api/v1/nodes", n, &out)
}

// Nodes lists the nodes.
func (c *Client) Nodes(ctx context.Context) ([]inventory.Node, error) {
	var out []inventory.Node
	return out, c.do(ctx, http.MethodGet, "/api/v1/nodes", nil, &out)
}

// Node returns one node.
func (c *Client) Node(ctx context.Context, name string) (inventory.Node, error) {
	var out inventory.Node
	return out, c.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(name), nil, &out)
}

// DeleteNode removes a node.
func (c *Client) DeleteNode(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/nodes/"+url.PathEscape(name), nil, nil)
}

// CreateTenant registers a tenant and, on an appliance that onboards
// tenants, starts its onboarding (Job).
func (c *Client) CreateTenant(ctx context.Context, t TenantSpec) (wire.TenantCreated, error) {
	var out wire.TenantCreated
	return out, c.do(ctx, http.MethodPost, "/api/v1/tenants", t, &out)
}

// Onboard starts a tenant's onboarding, or finds it running.
func (c *Client) Onboard(ctx context.Context, name string) (inventory.TenantJob, error) {
	var out inventory.TenantJob
	return out, c.do(ctx, http.MethodPost, "/api/v1/tenants/"+url.PathEscape(name)+"/onboard", nil, &out)
}

// Offboard starts a tenant's offboarding, or finds it running.
func (c *Client) Offboard(ctx context.Context, name string, opts inventory.OffboardOptions) (inventory.TenantJob, error) {
	var out inventory.TenantJob
	return out, c.do(ctx, http.MethodPost, "/api/v1/tenants/"+url.PathEscape(name)+"/offboard", opts, &out)
}

// TenantJobs lists a tenant's jobs, newest first, without their steps.
func (c *Client) TenantJobs(ctx context.Context, name string) ([]inventory.TenantJob, error) {
	var out []inventory.TenantJob
	return out, c.do(ctx, http.MethodGet, "/api/v1/tenants/"+url.PathEscape(name)+"/jobs", nil, &out)
}

// TenantJob returns one of a tenant's jobs with its steps.
func (c *Client) TenantJob(ctx context.Context, name string, id int64) (inventory.TenantJob, error) {
	var out inventory.TenantJob
	return out, c.do(ctx, http.MethodGet, "/api/v1/tenants/"+url.PathEscape(name)+"/jobs/"+strconv.FormatInt(id, 10), nil, &out)
}

// ForemanLogin returns the tenant's Foreman login; the appliance shows it once.
func (c *Client) ForemanLogin(ctx context.Context, name string) (inventory.ForemanLogin, error) {
	var out inventory.ForemanLogin
	return out, c.do(ctx, http.MethodPost, "/api/v1/tenants/"+url.PathEscape(name)+"/credentials", nil, &out)
}

// Tenants lists the tenants.
func (c *Client) Tenants(ctx context.Context) ([]inventory.Tenant, error) {
	var out []inventory.Tenant
	return out, c.do(ctx, http.MethodGet, "/api/v1/tenants", nil, &out)
}

// Tenant returns one tenant.
func (c *Client) Tenant(ctx context.Context, name string) (inventory.Tenant, error) {
	var out inventory.Tenant
	return out, c.do(ctx, http.MethodGet, "/api/v1/tenants/"+url.PathEscape(name), nil, &out)
}

// DeleteTenant removes a tenant.
func (c *Client) DeleteTenant(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/tenants/"+url.PathEscape(name), nil, nil)
}

// CreateLease creates a lease. A conflict is an *Error with status 409 and
// the conflicting lease in Conflict.
func (c *Client) CreateLease(ctx context.Context, l LeaseSpec) (Lease, error) {
	var out Lease
	return out, c.do(ctx, http.MethodPost, "/api/v1/leases", l, &out)
}

// The admin API's bodies, one copy in package wire shared with the server.
type (
	// Lease is a lease with its state at the time of the answer.
	Lease = wire.Lease
	// NodeSpec is what registering a node takes.
	NodeSpec = wire.NodeRequest
	// BMCSpec names a node's BMC.
	BMCSpec = wire.BMC
	// TenantSpec is what registering a tenant takes.
	TenantSpec = wire.TenantRequest
	// LeaseSpec is what creating a lease takes.
	LeaseSpec = wire.LeaseRequest
	// Power is a node's power state and holder as the admin API reports it.
	Power = wire.Power
	// Handover is a handover with, when fetched alone, its journal.
	Handover = wire.Handover
)

// LeaseQuery filters Leases; zero fields select everything.
type LeaseQuery struct {
	Node, Tenant string
	From, To     time.Time // leases overlapping [From, To)
	State        lease.State
	Limit        int
}

// Leases lists leases.
func (c *Client) Leases(ctx context.Context, f LeaseQuery) ([]Lease, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("node", f.Node)
	set("tenant", f.Tenant)
	set("state", string(f.State))
	if !f.From.IsZero() {
		q.Set("from", f.From.UTC().Format(time.RFC3339))
	}
	if !f.To.IsZero() {
		q.Set("to", f.To.UTC().Format(time.RFC3339))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	path := "/api/v1/leases"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []Lease
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Lease returns one lease.
func (c *Client) Lease(ctx context.Context, id int64) (Lease, error) {
	var out Lease
	return out, c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/leases/%d", id), nil, &out)
}

// CancelLease cancels a scheduled lease or ends an active one now.
func (c *Client) CancelLease(ctx context.Context, id int64) (Lease, error) {
	var out Lease
	return out, c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/leases/%d/cancel", id), nil, &out)
}

// ExtendLease moves a lease's end to end (RFC 3339), or later by by (a Go
// duration); give exactly one.
func (c *Client) ExtendLease(ctx context.Context, id int64, end, by string) (Lease, error) {
	var out Lease
	return out, c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/leases/%d/extend", id), wire.ExtendRequest{End: end, By: by}, &out)
}

// Audit returns up to limit audit entries, newest first.
func (c *Client) Audit(ctx context.Context, limit int) ([]audit.Entry, error) {
	var out []audit.Entry
	return out, c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/audit?limit=%d", limit), nil, &out)
}

// NodePower reads a node's real power state and its holder.
func (c *Client) NodePower(ctx context.Context, node string) (Power, error) {
	var out Power
	return out, c.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(node)+"/power", nil, &out)
}

// NodePowerAction drives the power of a node nobody holds.
func (c *Client) NodePowerAction(ctx context.Context, node, action string) error {
	return c.do(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(node)+"/power", wire.PowerRequest{Action: action}, nil)
}

// SetBMCPassword stores a node's BMC password in the appliance's secret store.
func (c *Client) SetBMCPassword(ctx context.Context, node, password string) error {
	return c.do(ctx, http.MethodPut, "/api/v1/nodes/"+url.PathEscape(node)+"/bmc-password", wire.PasswordRequest{Password: password}, nil)
}

// Handovers lists up to limit handovers (the server's default when 0),
// newest first; node may be empty, open selects running and stuck ones.
func (c *Client) Handovers(ctx context.Context, node string, open bool, limit int) ([]Handover, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if node != "" {
		q.Set("node", node)
	}
	if open {
		q.Set("open", "true")
	}
	var out []Handover
	return out, c.do(ctx, http.MethodGet, "/api/v1/handovers?"+q.Encode(), nil, &out)
}

// Handover returns one handover with its journal.
func (c *Client) Handover(ctx context.Context, id int64) (Handover, error) {
	var out Handover
	return out, c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/handovers/%d", id), nil, &out)
}

// TenantToken issues a new broker token for a tenant.
func (c *Client) TenantToken(ctx context.Context, tenant string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	return out.Token, c.do(ctx, http.MethodPost, "/api/v1/tenants/"+url.PathEscape(tenant)+"/token", nil, &out)
}
