package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/m2"
)

func m2Path(parts ...string) string {
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return "/m2/v1/" + strings.Join(parts, "/")
}

// Images lists the golden images.
func (c *Client) Images(ctx context.Context) ([]m2.Image, error) {
	var out []m2.Image
	return out, c.do(ctx, http.MethodGet, m2Path("images"), nil, &out)
}

// ImportImage imports golden image name from a file on the appliance.
func (c *Client) ImportImage(ctx context.Context, name, path string) (m2.Image, error) {
	var out m2.Image
	return out, c.do(ctx, http.MethodPost, m2Path("images"), map[string]string{"name": name, "path": path}, &out)
}

// UploadImage streams golden image name (size bytes) to the appliance.
func (c *Client) UploadImage(ctx context.Context, name string, r io.Reader, size int64) (m2.Image, error) {
	var out m2.Image
	return out, c.stream(ctx, http.MethodPut, m2Path("images", name), r, size, &out)
}

// RemoveImage removes a golden image.
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, m2Path("images", name), nil, nil)
}

// CreateDisk clones an image or (with snapshot set) a snapshot of project
// into disk name.
func (c *Client) CreateDisk(ctx context.Context, project, name, image, snapshot string) (m2.Disk, error) {
	var out m2.Disk
	body := map[string]string{"name": name}
	if image != "" {
		body["image"] = image
	}
	if snapshot != "" {
		body["snapshot"] = snapshot
	}
	return out, c.do(ctx, http.MethodPost, m2Path("projects", project, "disks"), body, &out)
}

// Disks lists project's disks.
func (c *Client) Disks(ctx context.Context, project string) ([]m2.Disk, error) {
	var out []m2.Disk
	return out, c.do(ctx, http.MethodGet, m2Path("projects", project, "disks"), nil, &out)
}

// Disk returns one disk.
func (c *Client) Disk(ctx context.Context, project, name string) (m2.Disk, error) {
	var out m2.Disk
	return out, c.do(ctx, http.MethodGet, m2Path("projects", project, "disks", name), nil, &out)
}

// DeleteDisk removes a detached disk.
func (c *Client) DeleteDisk(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, m2Path("projects", project, "disks", name), nil, nil)
}

// AttachDisk attaches a disk to a node and returns its boot token.
func (c *Client) AttachDisk(ctx context.Context, project, name, node string) (m2.Attachment, error) {
	var out m2.Attachment
	return out, c.do(ctx, http.MethodPost, m2Path("projects", project, "disks", name, "attach"), map[string]string{"node": node}, &out)
}

// DetachDisk detaches a disk from its node.
func (c *Client) DetachDisk(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodPost, m2Path("projects", project, "disks", name, "detach"), nil, nil)
}

// DiskBootScript returns the iPXE script of an attached disk.
func (c *Client) DiskBootScript(ctx context.Context, project, name string) (string, error) {
	var b strings.Builder
	err := c.raw(ctx, http.MethodGet, m2Path("projects", project, "disks", name, "boot.ipxe"), &b)
	return b.String(), err
}

// CreateSnapshot snapshots a disk.
func (c *Client) CreateSnapshot(ctx context.Context, project, disk, name string) (m2.Snapshot, error) {
	var out m2.Snapshot
	return out, c.do(ctx, http.MethodPost, m2Path("projects", project, "disks", disk, "snapshots"), map[string]string{"name": name}, &out)
}

// Snapshots lists project's snapshots.
func (c *Client) Snapshots(ctx context.Context, project string) ([]m2.Snapshot, error) {
	var out []m2.Snapshot
	return out, c.do(ctx, http.MethodGet, m2Path("projects", project, "snapshots"), nil, &out)
}

// RemoveSnapshot removes a snapshot.
func (c *Client) RemoveSnapshot(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, m2Path("projects", project, "snapshots", name), nil, nil)
}

// stream sends r as the raw body of a request.
func (c *Client) stream(ctx context.Context, method, path string, r io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	return c.send(req, out)
}

// raw fetches a text answer into w.
func (c *Client) raw(ctx context.Context, method, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	_, err = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
	return err
}
