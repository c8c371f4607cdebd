// Package brokerapi is the appliance's tenant broker API (/broker/v1) as
// its callers see it: the wire types the broker answers with and the Go
// client the smart-proxy uses. The broker derives the tenant from the
// caller's token, so no call names a tenant.
package brokerapi

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// Identity is the answer of GET /broker/v1/whoami: the tenant the
// caller's token belongs to and the appliance's optional features.
type Identity struct {
	Tenant   string   `json:"tenant"`
	Features Features `json:"features"`
}

// Features are the appliance's optional features a smart-proxy may
// advertise.
type Features struct {
	// M2 is true while the appliance's M2 backend is on.
	M2 bool `json:"m2"`
}

// Lease is one entry of GET /broker/v1/nodes: one of the tenant's active
// or upcoming leases and what the tenant may know of its node.
// BMCAddress is the node's tenant-facing address, the one its Foreman
// stores; the real BMC's address, port and user never reach a tenant.
type Lease struct {
	Node       string    `json:"node"`
	BMCAddress string    `json:"bmc_address,omitempty"`
	MACs       []string  `json:"macs"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	State      string    `json:"state"`
}

// Power is the answer of GET /broker/v1/nodes/{ref}/power: a node's power
// as the tenant may see it, the real state while the tenant holds the
// node, "off" otherwise.
type Power struct {
	Node  string `json:"node"`
	Power string `json:"power"` // "on" or "off"
	Held  bool   `json:"held"`
	// NextLeaseStart is the start of the tenant's next lease of the node
	// when it does not hold it now.
	NextLeaseStart *time.Time `json:"next_lease_start,omitempty"`
	// Handover: the node is between holders.
	Handover bool `json:"handover,omitempty"`
	// Stale: the state is the last one read, AgeSeconds old, because the
	// BMC did not answer now.
	Stale      bool `json:"stale,omitempty"`
	AgeSeconds int  `json:"age_seconds,omitempty"`
}

// PowerRequest is the body of PUT /broker/v1/nodes/{ref}/power.
type PowerRequest struct {
	// Action is on, off, cycle, soft or reset.
	Action string `json:"action"`
}

// PowerResult is the answer of PUT /broker/v1/nodes/{ref}/power.
type PowerResult struct {
	Action string `json:"action"`
	Node   string `json:"node"`
	Result bool   `json:"result"`
}

// BootRequest is the body of PUT /broker/v1/nodes/{ref}/boot-device.
type BootRequest struct {
	// Device is pxe, disk, bios or cdrom.
	Device     string `json:"device"`
	Persistent bool   `json:"persistent"`
}

// BootResult is the answer of PUT /broker/v1/nodes/{ref}/boot-device.
type BootResult struct {
	Device     string `json:"device"`
	Persistent bool   `json:"persistent"`
	Node       string `json:"node"`
	Result     bool   `json:"result"`
}

// Refusal is the body of an error answer about a node: 403 for a node the
// tenant does not hold now, with the start of its next lease of it if one
// is ahead.
type Refusal struct {
	Error          string     `json:"error"`
	Node           string     `json:"node,omitempty"`
	Handover       bool       `json:"handover,omitempty"`
	NextLeaseStart *time.Time `json:"next_lease_start,omitempty"`
}

// Error is an error answer of the broker: a refusal (403 for a node the
// tenant does not hold now, 404 for one it cannot see) or a failure (409,
// 502). Message is the appliance's own explanation. It unwraps to the
// *httpx.StatusError it was read from, so httpx.StatusOf works on it.
type Error struct {
	httpx.StatusError
	// NextLeaseStart accompanies a refusal for a node the tenant will
	// hold later.
	NextLeaseStart *time.Time
}

// Error returns the appliance's message and the HTTP status.
func (e *Error) Error() string { return e.StatusError.Error() }

// Unwrap returns the answer.
func (e *Error) Unwrap() error { return &e.StatusError }

// asError turns an error answer in err into an *Error; other errors pass.
func asError(err error) error {
	var se *httpx.StatusError
	if !errors.As(err, &se) {
		return err
	}
	e := &Error{StatusError: *se}
	var r Refusal
	if json.Unmarshal(se.Body, &r) == nil {
		e.NextLeaseStart = r.NextLeaseStart
	}
	return e
}
