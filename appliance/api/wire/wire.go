// Package wire holds the admin API's request and answer bodies: the one
// copy the server (appliance/api), its Go client (appliance/client) and
// the OpenAPI document's check share. It imports only pure domain types,
// so a client links no store.
package wire

import (
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
)

// Lease is a lease with its state at the time of the answer.
type Lease struct {
	lease.Lease
	State lease.State `json:"state"`
}

// NodeRequest is the body of POST /api/v1/nodes.
type NodeRequest struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	MACs        []string `json:"macs,omitempty"`
	BMC         *BMC     `json:"bmc,omitempty"`
	// TenantBMCAddress, if set, is the node's tenant-facing BMC address
	// (checked: inside the range, unique); the appliance picks a free one
	// from its range otherwise.
	TenantBMCAddress string `json:"tenant_bmc_address,omitempty"`
}

// BMC names a node's BMC. Host may include a port.
type BMC struct {
	Host string `json:"host"`
	Port int    `json:"port,omitempty"`
	User string `json:"user,omitempty"`
	// Password goes to the appliance's secret store, never to the node
	// record, and is never returned.
	Password string `json:"password,omitempty"`
}

// TenantRequest is the body of POST /api/v1/tenants.
type TenantRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	ForemanURL  string `json:"foreman_url,omitempty"`
}

// LeaseRequest is the body of POST /api/v1/leases. Start defaults to now;
// the end is given as End or as Duration (a Go duration such as 72h) from
// the start, or defaults to leases.default_duration.
type LeaseRequest struct {
	Node     string `json:"node"`
	Tenant   string `json:"tenant"`
	Start    string `json:"start,omitempty"`
	End      string `json:"end,omitempty"`
	Duration string `json:"duration,omitempty"`
}

// ExtendRequest is the body of POST /api/v1/leases/{id}/extend: a new
// end, or a duration to add to the current one.
type ExtendRequest struct {
	End string `json:"end,omitempty"`
	By  string `json:"by,omitempty"`
}

// PowerRequest is the body of PUT /api/v1/nodes/{name}/power.
type PowerRequest struct {
	Action string `json:"action"`
}

// PasswordRequest is the body of PUT /api/v1/nodes/{name}/bmc-password.
type PasswordRequest struct {
	Password string `json:"password"`
}

// Power is a node's real power state and its holder.
type Power struct {
	Node   string `json:"node"`
	Power  string `json:"power"`
	Holder string `json:"holder"`
}

// TenantCreated is the answer to POST /api/v1/tenants: the tenant and,
// when the appliance onboards tenants, the onboarding job it started.
type TenantCreated struct {
	inventory.Tenant
	Job *inventory.TenantJob `json:"job,omitempty"`
}

// Holder is who holds a node now: a tenant, or "" when nobody does.
// A standalone M2 backend asks it before serving a boot script.
type Holder struct {
	Node   string `json:"node"`
	Holder string `json:"holder"`
}

// Handover is a handover with, when fetched alone, its journal.
type Handover struct {
	lease.Handover
	Journal []lease.JournalEntry `json:"journal,omitempty"`
}

// Retry is the answer to a handover's retry: the handover as the retry
// left it, and the pass that will run it.
type Retry struct {
	lease.Handover
	Pass *pass.Record `json:"pass,omitempty"`
}
