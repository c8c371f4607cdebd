package foreman

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
)

// ErrNoBMC is returned by RegisterProxy when Foreman registered the proxy
// but imported no BMC feature from it.
var ErrNoBMC = errors.New("foreman imported no BMC feature from the smart-proxy")

// checkName refuses names Malleable never gives: empty, too long, or
// holding quotes, backslashes or control characters (they would reach a
// search query).
func checkName(what, s string) error {
	if s == "" || len(s) > 255 || strings.ContainsAny(s, `"\`) ||
		strings.IndexFunc(s, unicode.IsControl) >= 0 || strings.TrimSpace(s) != s {
		return fmt.Errorf("%s name %q: want 1-255 printable characters without quotes or backslashes", what, s)
	}
	return nil
}

// Tenant is what Personalise makes a Foreman created from the template
// database into.
type Tenant struct {
	AdminPassword string
	Organization  string
	Location      string
}

// Personalise turns a Foreman started from the template database (seed
// admin password, seed organization and location) into the tenant's: the
// admin's password becomes want.AdminPassword, the one organization and
// location are renamed (or created, or adopted by name), and they become
// the defaults. Each part is idempotent; when the seed password is refused
// the new one is tried, so a run interrupted after the password change
// resumes. It returns a client logged in with the new password.
func (c *Client) Personalise(ctx context.Context, seed Credentials, want Tenant) (*Client, error) {
	if want.AdminPassword == "" {
		return nil, errors.New("personalise: empty admin password")
	}
	for what, n := range map[string]string{"organization": want.Organization, "location": want.Location} {
		if err := checkName(what, n); err != nil {
			return nil, fmt.Errorf("personalise: %w", err)
		}
	}
	admin, err := c.setAdminPassword(ctx, seed, want.AdminPassword)
	if err != nil {
		return nil, err
	}
	for kind, name := range map[Taxonomy]string{Organizations: want.Organization, Locations: want.Location} {
		if _, err := admin.ensureTaxonomy(ctx, kind, name); err != nil {
			return nil, fmt.Errorf("personalise: %w", err)
		}
	}
	if err := admin.SetSetting(ctx, "default_organization", want.Organization); err != nil {
		return nil, fmt.Errorf("personalise: %w", err)
	}
	if err := admin.SetSetting(ctx, "default_location", want.Location); err != nil {
		return nil, fmt.Errorf("personalise: %w", err)
	}
	return admin, nil
}

// setAdminPassword changes seed.User's password from seed.Password to pw,
// or finds it already changed, and returns a client logged in with pw.
func (c *Client) setAdminPassword(ctx context.Context, seed Credentials, pw string) (*Client, error) {
	now := c.As(Credentials{seed.User, pw})
	u, err := c.As(seed).FindUser(ctx, seed.User)
	if errors.Is(err, ErrUnauthorized) && seed.Password != pw {
		if _, err := now.FindUser(ctx, seed.User); err != nil {
			return nil, fmt.Errorf("personalise: neither the seed nor the new admin password is accepted: %w", err)
		}
		c.log.Info("admin password already personalised", "user", seed.User)
		return now, nil
	}
	if err != nil {
		return nil, fmt.Errorf("personalise: %w", err)
	}
	if seed.Password != pw {
		if err := c.As(seed).ChangePassword(ctx, u.ID, seed.Password, pw); err != nil {
			return nil, fmt.Errorf("personalise: %w", err)
		}
		c.log.Info("admin password personalised", "user", seed.User)
	}
	return now, nil
}

// ensureTaxonomy adopts the organization or location named name, else
// renames the only one there is, else creates it.
func (c *Client) ensureTaxonomy(ctx context.Context, kind Taxonomy, name string) (Ref, error) {
	r, err := c.FindTaxonomy(ctx, kind, name)
	if !isNotFound(err) {
		return r, err
	}
	all, err := c.Taxonomies(ctx, kind)
	if err != nil {
		return r, err
	}
	if len(all) == 1 {
		c.log.Info("renaming "+kind.singular(), "from", all[0].Name, "to", name)
		return c.RenameTaxonomy(ctx, kind, all[0].ID, name)
	}
	c.log.Info("creating "+kind.singular(), "name", name, "existing", len(all))
	return c.CreateTaxonomy(ctx, kind, name)
}

// Scope names the organization and location records are placed in.
type Scope struct {
	Organization, Location string
}

// place resolves the scope's names to ids; an empty name is left out.
func (c *Client) place(ctx context.Context, s Scope) (Placement, error) {
	var p Placement
	for _, t := range []struct {
		kind Taxonomy
		name string
		ids  *[]int
	}{{Organizations, s.Organization, &p.OrganizationIDs}, {Locations, s.Location, &p.LocationIDs}} {
		if t.name == "" {
			continue
		}
		r, err := c.FindTaxonomy(ctx, t.kind, t.name)
		if err != nil {
			return p, err
		}
		*t.ids = []int{r.ID}
	}
	return p, nil
}

// RegisterProxy registers (or refreshes) the tenant's smart-proxy and
// checks that Foreman imported its BMC feature (ErrNoBMC otherwise).
func (c *Client) RegisterProxy(ctx context.Context, name, url string, in Scope) (SmartProxy, error) {
	if err := checkName("smart-proxy", name); err != nil {
		return SmartProxy{}, err
	}
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return SmartProxy{}, fmt.Errorf("smart-proxy url %q: want https://host:port", url)
	}
	p, err := c.place(ctx, in)
	if err != nil {
		return SmartProxy{}, fmt.Errorf("register smart-proxy %s: %w", name, err)
	}
	sp, err := c.Register(ctx, name, url, p)
	if err != nil {
		return sp, err
	}
	if !sp.Has("BMC") {
		return sp, fmt.Errorf("register smart-proxy %s: %w", name, ErrNoBMC)
	}
	return sp, nil
}

// BMCSubnet is the subnet holding the tenant-facing BMC addresses, whose
// BMC calls Foreman sends to the named smart-proxy.
type BMCSubnet struct {
	Name  string
	Range netip.Prefix
	Proxy string
	Scope
}

// EnsureBMCSubnet creates the subnet, adopts it when it already matches,
// or updates it.
func (c *Client) EnsureBMCSubnet(ctx context.Context, s BMCSubnet) (Subnet, error) {
	if err := checkName("subnet", s.Name); err != nil {
		return Subnet{}, err
	}
	sp, err := c.FindSmartProxy(ctx, s.Proxy)
	if err != nil {
		return Subnet{}, fmt.Errorf("ensure subnet %s: %w", s.Name, err)
	}
	p, err := c.place(ctx, s.Scope)
	if err != nil {
		return Subnet{}, fmt.Errorf("ensure subnet %s: %w", s.Name, err)
	}
	spec := SubnetSpec{Name: s.Name, Range: s.Range, BMCProxyID: sp.ID, Placement: p}
	got, err := c.FindSubnet(ctx, s.Name)
	switch {
	case isNotFound(err):
		return c.CreateSubnet(ctx, spec)
	case err != nil:
		return got, err
	}
	attrs, err := spec.attrs()
	if err != nil {
		return got, err
	}
	if got.Network == attrs["network"] && got.Mask == attrs["mask"] && got.BMCID == sp.ID {
		return got, nil
	}
	return c.UpdateSubnet(ctx, got.ID, spec)
}

// HostSpec is a tenant's node as a host in its Foreman: unmanaged, a
// primary interface with the node's MAC and an IPMI BMC interface at its
// tenant-facing BMC address in the BMC subnet.
type HostSpec struct {
	Name                 string
	MAC                  string
	BMCAddress           netip.Addr
	BMCUser, BMCPassword string
	Org, Loc             string
	Subnet               string
}

// EnsureHost creates the host or updates the existing one of that name in
// place (its interfaces keep their ids; nothing is duplicated).
func (c *Client) EnsureHost(ctx context.Context, h HostSpec) (Host, error) {
	a := HostAttrs{Name: h.Name, MAC: h.MAC, BMCAddress: h.BMCAddress, BMCUser: h.BMCUser, BMCPassword: h.BMCPassword}
	if _, err := a.body(); err != nil { // bad input changes nothing
		return Host{}, err
	}
	p, err := c.place(ctx, Scope{h.Org, h.Loc})
	if err != nil {
		return Host{}, fmt.Errorf("ensure host %s: %w", h.Name, err)
	}
	if len(p.OrganizationIDs) > 0 {
		a.OrganizationID = p.OrganizationIDs[0]
	}
	if len(p.LocationIDs) > 0 {
		a.LocationID = p.LocationIDs[0]
	}
	if h.Subnet != "" {
		sn, err := c.FindSubnet(ctx, h.Subnet)
		if err != nil {
			return Host{}, fmt.Errorf("ensure host %s: %w", h.Name, err)
		}
		a.BMCSubnetID = sn.ID
	}
	got, err := c.FindHost(ctx, h.Name)
	switch {
	case isNotFound(err):
		return c.CreateHost(ctx, a)
	case err != nil:
		return got, err
	}
	if i, ok := got.PrimaryInterface(); ok {
		a.PrimaryID = i.ID
	}
	if i, ok := got.BMC(); ok {
		a.BMCID = i.ID
	}
	return c.UpdateHost(ctx, got.ID, a)
}

// RemoveHost deletes the host named name; an absent host is not an error.
func (c *Client) RemoveHost(ctx context.Context, name string) error {
	if !validHostName(name) {
		return fmt.Errorf("host name %q: want [a-z0-9][a-z0-9-]{0,62}", name)
	}
	h, err := c.FindHost(ctx, name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.DeleteHost(ctx, h.ID); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// EnsureTemplate stores body as the iPXE provisioning template named name,
// creating it, adopting it when it is already identical, or replacing its
// body.
func (c *Client) EnsureTemplate(ctx context.Context, name, body string, in Scope) (Template, error) {
	if err := checkName("template", name); err != nil {
		return Template{}, err
	}
	kind, err := c.TemplateKind(ctx, "iPXE")
	if err != nil {
		return Template{}, fmt.Errorf("ensure template %q: %w", name, err)
	}
	p, err := c.place(ctx, in)
	if err != nil {
		return Template{}, fmt.Errorf("ensure template %q: %w", name, err)
	}
	spec := TemplateSpec{Name: name, Body: body, KindID: kind.ID, Placement: p}
	got, err := c.FindTemplate(ctx, name)
	switch {
	case isNotFound(err):
		return c.CreateTemplate(ctx, spec)
	case err != nil:
		return got, err
	case got.Template == body && got.TemplateKindID == kind.ID:
		return got, nil
	}
	return c.UpdateTemplate(ctx, got.ID, spec)
}
