package brokerapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// Client calls the broker API with one tenant's token. It holds no policy:
// the appliance decides what the token may do. Error answers are *Error.
// It is safe for concurrent use.
type Client struct {
	c httpx.Caller
}

// NewClient returns a client of the appliance at baseURL (for example
// http://127.0.0.1:8780) that authenticates with token and sends its
// requests with hc (http.DefaultClient when nil). Calls are bounded by
// their context only: callers set the deadline.
func NewClient(baseURL, token string, hc *http.Client) *Client {
	return &Client{c: httpx.Caller{Base: strings.TrimRight(baseURL, "/"), Token: token, HTTP: hc}}
}

func nodePath(ref, what string) string {
	return "/broker/v1/nodes/" + url.PathEscape(ref) + "/" + what
}

// Whoami returns the tenant the client's token belongs to and the
// appliance's optional features.
func (c *Client) Whoami(ctx context.Context) (Identity, error) {
	var out Identity
	if err := asError(c.c.Do(ctx, http.MethodGet, "/broker/v1/whoami", nil, &out)); err != nil {
		return Identity{}, err
	}
	if out.Tenant == "" {
		return Identity{}, errors.New("GET /broker/v1/whoami: the appliance named no tenant")
	}
	return out, nil
}

// Nodes lists the tenant's active and upcoming leases.
func (c *Client) Nodes(ctx context.Context) ([]Lease, error) {
	var out []Lease
	return out, asError(c.c.Do(ctx, http.MethodGet, "/broker/v1/nodes", nil, &out))
}

// PowerStatus reads a node's power as the tenant may see it; ref is a node
// name or its tenant-facing BMC address.
func (c *Client) PowerStatus(ctx context.Context, ref string) (Power, error) {
	var out Power
	err := asError(c.c.Do(ctx, http.MethodGet, nodePath(ref, "power"), nil, &out))
	if err == nil && out.Power != "on" && out.Power != "off" {
		err = fmt.Errorf("GET /broker/v1/nodes/{ref}/power: unexpected power %q", out.Power)
	}
	return out, err
}

// Power sends a power action (on, off, cycle, soft, reset).
func (c *Client) Power(ctx context.Context, ref, action string) error {
	return asError(c.c.Do(ctx, http.MethodPut, nodePath(ref, "power"), PowerRequest{Action: action}, nil))
}

// SetBootDevice sets the next boot device (pxe, disk, bios, cdrom).
func (c *Client) SetBootDevice(ctx context.Context, ref, device string, persistent bool) error {
	return asError(c.c.Do(ctx, http.MethodPut, nodePath(ref, "boot-device"), BootRequest{Device: device, Persistent: persistent}, nil))
}
