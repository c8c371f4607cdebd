package tenants

import (
	"context"
	"errors"
	"fmt"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// HostFor makes the host of node in the tenant's Foreman, as the
// handover's activate step hands the node to the tenant; a tenant without
// a Foreman of the appliance's has nothing to do. A node returning to its
// tenant finds its host as it left it: the host is kept while the tenant
// has leases of the node ahead, and removed by the drift pass after.
func (p *Plan) HostFor(ctx context.Context, tenant, nodeName string) error {
	t, err := p.Store.GetTenant(ctx, tenant)
	if err != nil {
		return err
	}
	if t.State != inventory.TenantReady || t.ForemanURL == "" {
		return nil
	}
	pw, err := p.Secrets.Get(ctx, SecretPath(tenant, secretAdminPassword))
	if errors.Is(err, secrets.ErrNotFound) {
		return nil
	}
	bmcPW, perr := p.Secrets.Get(ctx, SecretPath(tenant, secretBMCPassword))
	if err := errors.Join(err, perr); err != nil {
		return err
	}
	nodes, err := p.Store.LeasedNodes(ctx, tenant, p.now())
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Name != nodeName {
			continue
		}
		o := &onboarding{Plan: p, tenant: tenant, sec: map[string][]byte{secretBMCPassword: bmcPW}}
		h, err := o.host(n)
		if err != nil {
			return err
		}
		fc, err := p.Foreman(t.ForemanURL, adminUser, string(pw))
		if err != nil {
			return err
		}
		return fc.EnsureHost(ctx, h, bmcSubnetName, tenant, TenantLocation)
	}
	return fmt.Errorf("node %s: no lease of %s", nodeName, tenant)
}
