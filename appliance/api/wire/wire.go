// Package wire holds the admin API's request and answer bodies: the one
// copy the server (appliance/api), its Go client (appliance/client) and
// the OpenAPI document's check share. It imports only pure domain types,
// so a client links no store.
package wire

import "github.com/malleable-cloud/malleable/appliance/lease"

// Lease is a lease with its state at the time of the answer.
type Lease struct {
	lease.Lease
	State lease.State `json:"state"`
}
