package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/malleable-cloud/malleable/appliance/m2"
)

// Broker is what the smart-proxy asks the appliance's broker API. The
// appliance derives the tenant from the proxy's credential, so no call
// names a tenant; every decision (does the tenant hold this node now?) is
// the appliance's. Refusals and failures the appliance answered are
// *APIError.
type Broker interface {
	// Whoami returns the tenant the proxy's credential belongs to and
	// the appliance's optional features.
	Whoami(ctx context.Context) (Identity, error)
	// Nodes lists the tenant's active and upcoming leases.
	Nodes(ctx context.Context) ([]Lease, error)
	// PowerStatus reads a node's power as the tenant may see it; ref is a
	// node name or BMC address.
	PowerStatus(ctx context.Context, ref string) (Power, error)
	// Power sends a power action (on, off, cycle, soft, reset).
	Power(ctx context.Context, ref, action string) error
	// SetBootDevice sets the next boot device (pxe, disk, bios, cdrom).
	SetBootDevice(ctx context.Context, ref, device string, persistent bool) error
}

// Storage is what the M2 plugin asks the appliance's M2 API, always for
// the tenant's own project: the appliance refuses any other.
type Storage interface {
	Images(ctx context.Context) ([]m2.Image, error)
	Disks(ctx context.Context, project string) ([]m2.Disk, error)
	Disk(ctx context.Context, project, name string) (m2.Disk, error)
	// CreateDisk clones image or, if snapshot is set, a snapshot.
	CreateDisk(ctx context.Context, project, name, image, snapshot string) (m2.Disk, error)
	DeleteDisk(ctx context.Context, project, name string) error
	Attach(ctx context.Context, project, disk, node string) (m2.Attachment, error)
	Detach(ctx context.Context, project, disk string) error
	DiskBootScript(ctx context.Context, project, disk string) ([]byte, error)
	// BootScript fetches a node's boot script by its per-attach token;
	// the appliance serves it only while the node is held by the disk's
	// tenant.
	BootScript(ctx context.Context, token string) ([]byte, error)
	CreateSnapshot(ctx context.Context, project, disk, name string) (m2.Snapshot, error)
	Snapshots(ctx context.Context, project string) ([]m2.Snapshot, error)
	RemoveSnapshot(ctx context.Context, project, name string) error
}

// Identity is what the appliance says about the proxy's credential: its
// tenant, and which of the appliance's optional features are on.
type Identity struct {
	Tenant   string   `json:"tenant"`
	Features Features `json:"features"`
}

// Features are the appliance's optional features a proxy may advertise.
type Features struct {
	// M2 is true while the appliance's M2 backend is on.
	M2 bool `json:"m2"`
}

// Lease is one of the tenant's active or upcoming leases.
type Lease struct {
	Node       string    `json:"node"`
	BMCAddress string    `json:"bmc_address,omitempty"` // the node's tenant-facing BMC address
	MACs       []string  `json:"macs"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	State      string    `json:"state"`
}

// Power is a node's power state as the tenant may see it: the real state
// while the tenant holds the node, "off" otherwise.
type Power struct {
	Node  string `json:"node"`
	Power string `json:"power"` // "on" or "off"
	Held  bool   `json:"held"`
	// NextLeaseStart is the start of the tenant's next lease of the node
	// when it does not hold it now.
	NextLeaseStart *time.Time `json:"next_lease_start,omitempty"`
}

// The power actions and boot devices the broker takes.
var (
	powerActions = []string{"on", "off", "cycle", "soft", "reset"}
	bootDevices  = []string{"pxe", "disk", "bios", "cdrom"}
)

// APIError is an error answer of the appliance: a refusal (403 for a node
// the tenant does not hold now, 404 for one it cannot see) or a failure
// (409, 502). Message is the appliance's own explanation.
type APIError struct {
	Status  int
	Message string
	// NextLeaseStart accompanies a refusal for a node the tenant will
	// hold later.
	NextLeaseStart *time.Time
}

// Error returns the appliance's message.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s (appliance answered HTTP %d)", e.Message, e.Status)
}

// statusOf returns the HTTP status of an appliance answer in err, or 0.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// isNotFound reports whether the appliance answered 404.
func isNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }
