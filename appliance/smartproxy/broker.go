package smartproxy

import (
	"context"
	"net/http"

	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

// Broker is what the smart-proxy asks the appliance's broker API. The
// appliance derives the tenant from the proxy's credential, so no call
// names a tenant; every decision (does the tenant hold this node now?) is
// the appliance's. Refusals and failures the appliance answered are
// *brokerapi.Error.
type Broker interface {
	// Whoami returns the tenant the proxy's credential belongs to and
	// the appliance's optional features.
	Whoami(ctx context.Context) (brokerapi.Identity, error)
	// Nodes lists the tenant's active and upcoming leases.
	Nodes(ctx context.Context) ([]brokerapi.Lease, error)
	// PowerStatus reads a node's power as the tenant may see it; ref is a
	// node name or BMC address.
	PowerStatus(ctx context.Context, ref string) (brokerapi.Power, error)
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

// The power actions and boot devices the broker takes.
var (
	powerActions = []string{"on", "off", "cycle", "soft", "reset"}
	bootDevices  = []string{"pxe", "disk", "bios", "cdrom"}
)

// statusOf returns the HTTP status of an appliance answer in err, or 0.
func statusOf(err error) int { return httpx.StatusOf(err) }

// isNotFound reports whether the appliance answered 404.
func isNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }
