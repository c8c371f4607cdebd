package foreman

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Placement is the organizations and locations a record belongs to.
type Placement struct {
	OrganizationIDs []int
	LocationIDs     []int
}

// add puts the placement's ids into attrs, when set.
func (p Placement) add(attrs map[string]any) map[string]any {
	if len(p.OrganizationIDs) > 0 {
		attrs["organization_ids"] = p.OrganizationIDs
	}
	if len(p.LocationIDs) > 0 {
		attrs["location_ids"] = p.LocationIDs
	}
	return attrs
}

// Feature is a smart-proxy feature Foreman imported.
type Feature struct {
	ID           int      `json:"id"`
	Name         string   `json:"name"`
	Capabilities []string `json:"capabilities"`
}

// SmartProxy is a registered smart-proxy.
type SmartProxy struct {
	ID       int       `json:"id"`
	Name     string    `json:"name"`
	URL      string    `json:"url"`
	Features []Feature `json:"features"`
}

// Has reports whether Foreman imported the feature named name (e.g. "BMC").
func (p SmartProxy) Has(name string) bool {
	for _, f := range p.Features {
		if f.Name == name {
			return true
		}
	}
	return false
}

// FindSmartProxy returns the smart-proxy named name. Foreman's index
// omits features; this reads the record itself.
func (c *Client) FindSmartProxy(ctx context.Context, name string) (SmartProxy, error) {
	p, err := findOne(ctx, c, "smart_proxies", "name", name, func(p SmartProxy) string { return p.Name })
	if err != nil {
		return p, err
	}
	return c.SmartProxy(ctx, p.ID)
}

// SmartProxy returns the smart-proxy id with its features.
func (c *Client) SmartProxy(ctx context.Context, id int) (SmartProxy, error) {
	var p SmartProxy
	if err := c.call(ctx, http.MethodGet, itemPath("smart_proxies", id), nil, &p); err != nil {
		return p, fmt.Errorf("read smart-proxy %d: %w", id, err)
	}
	return p, nil
}

// Register makes the smart-proxy name at url known to Foreman, which calls
// the proxy's /v2/features before it saves and answers 422 when it cannot:
// the proxy must already answer. An existing proxy of that name at the
// same URL has its features refreshed; at another URL it is moved there.
func (c *Client) Register(ctx context.Context, name, url string, where Placement) (SmartProxy, error) {
	url = strings.TrimRight(url, "/") // Foreman strips it too
	p, err := c.FindSmartProxy(ctx, name)
	switch {
	case isNotFound(err):
		if err := c.call(ctx, http.MethodPost, "/api/smart_proxies",
			wrap("smart_proxy", where.add(map[string]any{"name": name, "url": url})), &p); err != nil {
			return p, fmt.Errorf("register smart-proxy %s at %s: %w", name, url, err)
		}
		c.log.Info("smart-proxy registered", "proxy", name, "url", url, "id", p.ID)
		return p, nil
	case err != nil:
		return p, err
	case p.URL == url:
		return c.RefreshSmartProxy(ctx, p.ID)
	}
	if err := c.call(ctx, http.MethodPut, itemPath("smart_proxies", p.ID),
		wrap("smart_proxy", where.add(map[string]any{"url": url})), &p); err != nil {
		return p, fmt.Errorf("move smart-proxy %s to %s: %w", name, url, err)
	}
	c.log.Info("smart-proxy moved", "proxy", name, "url", url, "id", p.ID)
	return p, nil
}

// RefreshSmartProxy makes Foreman read the proxy's features again.
func (c *Client) RefreshSmartProxy(ctx context.Context, id int) (SmartProxy, error) {
	var p SmartProxy
	if err := c.call(ctx, http.MethodPut, itemPath("smart_proxies", id, "refresh"), nil, &p); err != nil {
		return p, fmt.Errorf("refresh smart-proxy %d: %w", id, err)
	}
	return p, nil
}

// DeleteSmartProxy removes the smart-proxy id from Foreman.
func (c *Client) DeleteSmartProxy(ctx context.Context, id int) error {
	if err := c.call(ctx, http.MethodDelete, itemPath("smart_proxies", id), nil, nil); err != nil {
		return fmt.Errorf("delete smart-proxy %d: %w", id, err)
	}
	return nil
}

// Subnet is a Foreman subnet.
type Subnet struct {
	ID      int    `json:"id"`
	Name    string `json:"name"`
	Network string `json:"network"`
	Mask    string `json:"mask"`
	// BMCID is the smart-proxy Foreman sends the subnet's BMC calls to.
	BMCID int `json:"bmc_id"`
}

// SubnetSpec is a subnet whose BMC calls go through one smart-proxy.
type SubnetSpec struct {
	Name string
	// Range holds the BMC addresses (IPv4, no host bits).
	Range netip.Prefix
	// BMCProxyID is the smart-proxy's id.
	BMCProxyID int
	Placement
}

// attrs is the spec as Foreman's subnet attributes.
func (s SubnetSpec) attrs() (map[string]any, error) {
	if !s.Range.IsValid() || !s.Range.Addr().Is4() || s.Range.Masked() != s.Range {
		return nil, fmt.Errorf("subnet %s: %v is not an IPv4 network without host bits", s.Name, s.Range)
	}
	mask := netip.AddrFrom4([4]byte(net4Mask(s.Range.Bits())))
	return s.add(map[string]any{"name": s.Name, "network": s.Range.Addr().String(), "mask": mask.String(),
		"bmc_id": s.BMCProxyID, "ipam": "None", "boot_mode": "Static"}), nil
}

// net4Mask is the IPv4 netmask of a prefix length.
func net4Mask(bits int) []byte {
	m := ^uint32(0) << (32 - bits)
	return []byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
}

// FindSubnet returns the subnet named name.
func (c *Client) FindSubnet(ctx context.Context, name string) (Subnet, error) {
	return findOne(ctx, c, "subnets", "name", name, func(s Subnet) string { return s.Name })
}

// CreateSubnet creates the subnet s describes.
func (c *Client) CreateSubnet(ctx context.Context, s SubnetSpec) (Subnet, error) {
	var out Subnet
	attrs, err := s.attrs()
	if err != nil {
		return out, err
	}
	if err := c.call(ctx, http.MethodPost, "/api/subnets", wrap("subnet", attrs), &out); err != nil {
		return out, fmt.Errorf("create subnet %s: %w", s.Name, err)
	}
	return out, nil
}

// UpdateSubnet makes subnet id what s describes.
func (c *Client) UpdateSubnet(ctx context.Context, id int, s SubnetSpec) (Subnet, error) {
	var out Subnet
	attrs, err := s.attrs()
	if err != nil {
		return out, err
	}
	if err := c.call(ctx, http.MethodPut, itemPath("subnets", id), wrap("subnet", attrs), &out); err != nil {
		return out, fmt.Errorf("update subnet %s: %w", s.Name, err)
	}
	return out, nil
}
