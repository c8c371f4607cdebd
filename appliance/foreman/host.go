package foreman

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// ErrNoPower is returned by Power when Foreman cannot read a host's power
// (state "na"): no BMC proxy for its subnet, no BMC credentials, or no
// answer in time.
var ErrNoPower = errors.New("foreman cannot read the power state")

// isNotFound reports whether err is a 404 or a lookup that found nothing.
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Interface is one of a host's network interfaces.
type Interface struct {
	ID         int    `json:"id,omitempty"`
	Type       string `json:"type"` // "interface" or "bmc"
	Identifier string `json:"identifier,omitempty"`
	MAC        string `json:"mac,omitempty"`
	IP         string `json:"ip,omitempty"`
	Primary    bool   `json:"primary"`
	Provision  bool   `json:"provision"`
	Managed    bool   `json:"managed"`
	Provider   string `json:"provider,omitempty"`
	Username   string `json:"username,omitempty"`
	SubnetID   int    `json:"subnet_id,omitempty"`
}

// Host is a Foreman host.
type Host struct {
	ID             int         `json:"id"`
	Name           string      `json:"name"`
	OrganizationID int         `json:"organization_id"`
	LocationID     int         `json:"location_id"`
	Interfaces     []Interface `json:"interfaces"`
}

// BMC returns the host's BMC interface, if it has one.
func (h Host) BMC() (Interface, bool) { return h.iface("bmc", false) }

// PrimaryInterface returns the host's primary interface, if it has one.
func (h Host) PrimaryInterface() (Interface, bool) { return h.iface("interface", true) }

func (h Host) iface(typ string, primary bool) (Interface, bool) {
	for _, i := range h.Interfaces {
		if i.Type == typ && (!primary || i.Primary) {
			return i, true
		}
	}
	return Interface{}, false
}

// FindHost returns the host named name, with its interfaces.
func (c *Client) FindHost(ctx context.Context, name string) (Host, error) {
	h, err := findOne(ctx, c, "hosts", "name", name, func(h Host) string { return h.Name })
	if err != nil {
		return h, err
	}
	return c.Host(ctx, h.ID)
}

// Host returns the host id with its interfaces.
func (c *Client) Host(ctx context.Context, id int) (Host, error) {
	var h Host
	if err := c.call(ctx, http.MethodGet, itemPath("hosts", id), nil, &h); err != nil {
		return h, fmt.Errorf("read host %d: %w", id, err)
	}
	return h, nil
}

// HostAttrs is an unmanaged host with a primary interface and an IPMI BMC
// interface, as Foreman's host attributes.
type HostAttrs struct {
	Name                 string
	OrganizationID       int
	LocationID           int
	MAC                  string
	BMCAddress           netip.Addr
	BMCSubnetID          int
	BMCUser, BMCPassword string
	PrimaryID, BMCID     int // existing interfaces' ids, on update
}

var macRE = regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`)

// body is a's host attributes, or an error naming the bad field.
func (a HostAttrs) body() (map[string]any, error) {
	mac := strings.ToLower(a.MAC)
	switch {
	case !validHostName(a.Name):
		return nil, fmt.Errorf("host name %q: want [a-z0-9][a-z0-9-]{0,62}", a.Name)
	case !macRE.MatchString(mac):
		return nil, fmt.Errorf("host %s: MAC %q is not aa:bb:cc:dd:ee:ff", a.Name, a.MAC)
	case !a.BMCAddress.Is4():
		return nil, fmt.Errorf("host %s: BMC address %v is not IPv4", a.Name, a.BMCAddress)
	case a.BMCUser == "" || a.BMCPassword == "":
		return nil, fmt.Errorf("host %s: BMC user and password are required (Foreman enables power only with both)", a.Name)
	}
	primary := map[string]any{"type": "interface", "mac": mac, "primary": true, "provision": true, "managed": false}
	bmc := map[string]any{"type": "bmc", "provider": "IPMI", "ip": a.BMCAddress.String(), "managed": false,
		"username": a.BMCUser, "password": a.BMCPassword}
	if a.PrimaryID != 0 {
		primary["id"] = a.PrimaryID
	}
	if a.BMCID != 0 {
		bmc["id"] = a.BMCID
	}
	if a.BMCSubnetID != 0 {
		bmc["subnet_id"] = a.BMCSubnetID
	}
	host := map[string]any{"name": a.Name, "managed": false, "build": false,
		"interfaces_attributes": []map[string]any{primary, bmc}}
	if a.OrganizationID != 0 {
		host["organization_id"] = a.OrganizationID
	}
	if a.LocationID != 0 {
		host["location_id"] = a.LocationID
	}
	return wrap("host", host), nil
}

var hostNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// validHostName is a host name Malleable gives a node in Foreman.
func validHostName(s string) bool { return hostNameRE.MatchString(s) }

// CreateHost creates the host a describes.
func (c *Client) CreateHost(ctx context.Context, a HostAttrs) (Host, error) {
	var h Host
	body, err := a.body()
	if err != nil {
		return h, err
	}
	if err := c.call(ctx, http.MethodPost, "/api/hosts", body, &h); err != nil {
		return h, fmt.Errorf("create host %s: %w", a.Name, err)
	}
	return h, nil
}

// UpdateHost makes host id what a describes; a.PrimaryID and a.BMCID name
// the interfaces to change (else Foreman adds new ones).
func (c *Client) UpdateHost(ctx context.Context, id int, a HostAttrs) (Host, error) {
	var h Host
	body, err := a.body()
	if err != nil {
		return h, err
	}
	if err := c.call(ctx, http.MethodPut, itemPath("hosts", id), body, &h); err != nil {
		return h, fmt.Errorf("update host %s: %w", a.Name, err)
	}
	return h, nil
}

// DeleteHost removes host id.
func (c *Client) DeleteHost(ctx context.Context, id int) error {
	if err := c.call(ctx, http.MethodDelete, itemPath("hosts", id), nil, nil); err != nil {
		return fmt.Errorf("delete host %d: %w", id, err)
	}
	return nil
}

// Power asks Foreman for host id's power state, which Foreman reads
// through the BMC smart-proxy of the BMC interface's subnet: "on", "off",
// or "na" when it cannot tell (Foreman answers 200 then, its reason in
// statusText, returned in the error).
func (c *Client) Power(ctx context.Context, id int) (string, error) {
	var out struct {
		State      string `json:"state"`
		StatusText string `json:"statusText"`
	}
	if err := c.call(ctx, http.MethodGet, itemPath("hosts", id, "power"), nil, &out); err != nil {
		return "", fmt.Errorf("read power of host %d: %w", id, err)
	}
	if out.State == "na" {
		return out.State, fmt.Errorf("read power of host %d: %w: %s", id, ErrNoPower, out.StatusText)
	}
	return out.State, nil
}

// PowerActions returns the actions SetPower takes.
// Foreman 3.12 lists "start, stop, poweroff, reboot, reset, soft, cycle,
// state, on, off, status, ready?" and answers 422 to any other.
func PowerActions() []string {
	return []string{"on", "start", "off", "stop", "poweroff", "soft", "reboot", "cycle", "reset"}
}

// SetPower sends a power action to host id through Foreman.
func (c *Client) SetPower(ctx context.Context, id int, action string) error {
	if !slices.Contains(PowerActions(), action) {
		return fmt.Errorf("power action %q: want one of %s", action, strings.Join(PowerActions(), ", "))
	}
	var out struct {
		Power bool `json:"power"`
	}
	if err := c.call(ctx, http.MethodPut, itemPath("hosts", id, "power"), map[string]any{"power_action": action}, &out); err != nil {
		return fmt.Errorf("power %s host %d: %w", action, id, err)
	}
	if !out.Power {
		return fmt.Errorf("power %s host %d: Foreman answered power=false", action, id)
	}
	return nil
}
