package m2

import (
	"context"
	"io"
	"net/http"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// maxScript bounds a boot script the client reads.
const maxScript = 4 << 20

// Client calls the M2 API (/m2/v1) with one token: the admin's (the CLI)
// or a tenant's broker token (the smart-proxy), which the appliance
// confines to the tenant's project. It holds no policy and is safe for
// concurrent use. An error answer is an *httpx.StatusError.
type Client struct {
	c httpx.Caller
}

// NewClient returns a client of the appliance at baseURL (for example
// http://127.0.0.1:8780) that authenticates with token and sends its
// requests with hc (its transport, TLS roots and timeout are the
// caller's; http.DefaultClient when nil).
func NewClient(baseURL, token string, hc *http.Client) *Client {
	return &Client{c: httpx.Caller{Base: strings.TrimRight(baseURL, "/"), Token: token, HTTP: hc}}
}

func path(parts ...string) string { return "/m2/v1/" + httpx.PathEscape(parts...) }

// Images lists the golden images.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	return out, c.c.Do(ctx, http.MethodGet, path("images"), nil, &out)
}

// ImportImage imports golden image name from a file on the appliance
// (admin only).
func (c *Client) ImportImage(ctx context.Context, name, file string) (Image, error) {
	var out Image
	return out, c.c.Do(ctx, http.MethodPost, path("images"), map[string]string{"name": name, "path": file}, &out)
}

// UploadImage streams golden image name (size bytes) to the appliance
// (admin only).
func (c *Client) UploadImage(ctx context.Context, name string, r io.Reader, size int64) (Image, error) {
	var out Image
	return out, c.c.Stream(ctx, http.MethodPut, path("images", name), r, size, &out)
}

// RemoveImage removes a golden image (admin only).
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.c.Do(ctx, http.MethodDelete, path("images", name), nil, nil)
}

// CreateDisk clones image or, with snapshot set, a snapshot of project
// into disk name.
func (c *Client) CreateDisk(ctx context.Context, project, name, image, snapshot string) (Disk, error) {
	body := map[string]string{"name": name}
	if image != "" {
		body["image"] = image
	}
	if snapshot != "" {
		body["snapshot"] = snapshot
	}
	var out Disk
	return out, c.c.Do(ctx, http.MethodPost, path("projects", project, "disks"), body, &out)
}

// Disks lists project's disks.
func (c *Client) Disks(ctx context.Context, project string) ([]Disk, error) {
	var out []Disk
	return out, c.c.Do(ctx, http.MethodGet, path("projects", project, "disks"), nil, &out)
}

// Disk returns one disk.
func (c *Client) Disk(ctx context.Context, project, name string) (Disk, error) {
	var out Disk
	return out, c.c.Do(ctx, http.MethodGet, path("projects", project, "disks", name), nil, &out)
}

// DeleteDisk removes a detached disk.
func (c *Client) DeleteDisk(ctx context.Context, project, name string) error {
	return c.c.Do(ctx, http.MethodDelete, path("projects", project, "disks", name), nil, nil)
}

// Attach attaches a disk to a node and returns the node's new boot token.
func (c *Client) Attach(ctx context.Context, project, disk, node string) (Attachment, error) {
	var out Attachment
	return out, c.c.Do(ctx, http.MethodPost, path("projects", project, "disks", disk, "attach"), map[string]string{"node": node}, &out)
}

// Detach detaches a disk from its node.
func (c *Client) Detach(ctx context.Context, project, disk string) error {
	return c.c.Do(ctx, http.MethodPost, path("projects", project, "disks", disk, "detach"), nil, nil)
}

// DiskBootScript returns the iPXE script of an attached disk.
func (c *Client) DiskBootScript(ctx context.Context, project, disk string) ([]byte, error) {
	return c.c.Text(ctx, path("projects", project, "disks", disk, "boot.ipxe"), maxScript)
}

// BootScript fetches a node's boot script by its per-attach token. The
// client's credential goes with it, so a tenant's token fetches only that
// tenant's scripts. Errors name the route, never the token.
func (c *Client) BootScript(ctx context.Context, token string) ([]byte, error) {
	return c.c.Text(ctx, path("boot", token), maxScript)
}

// CreateSnapshot snapshots a disk.
func (c *Client) CreateSnapshot(ctx context.Context, project, disk, name string) (Snapshot, error) {
	var out Snapshot
	return out, c.c.Do(ctx, http.MethodPost, path("projects", project, "disks", disk, "snapshots"), map[string]string{"name": name}, &out)
}

// Snapshots lists project's snapshots.
func (c *Client) Snapshots(ctx context.Context, project string) ([]Snapshot, error) {
	var out []Snapshot
	return out, c.c.Do(ctx, http.MethodGet, path("projects", project, "snapshots"), nil, &out)
}

// RemoveSnapshot removes a snapshot.
func (c *Client) RemoveSnapshot(ctx context.Context, project, name string) error {
	return c.c.Do(ctx, http.MethodDelete, path("projects", project, "snapshots", name), nil, nil)
}
