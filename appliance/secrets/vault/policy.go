package vault

import (
	"context"
	"fmt"

	"github.com/malleable-cloud/malleable/appliance/pki"
)

// TenantPolicy is the HCL text of a Vault policy confining a token to one
// tenant: read its own secrets under <Root>/tenants/<name>/, issue through
// its own PKI role, read the CA and CRL. The appliance's own token needs
// far more; this is for a token handed to the tenant's smart-proxy.
func (c *Client) TenantPolicy(tenant string) (string, error) {
	if err := pki.ValidateTenant(tenant); err != nil {
		return "", fmt.Errorf("tenant policy: %w", err)
	}
	kv, root, p := c.cfg.KVMount, c.cfg.Root, c.cfg.PKIMount
	return fmt.Sprintf(`# Malleable tenant %[4]s: its own secrets and certificates only.
path "%[1]s/data/%[2]s/tenants/%[4]s/*" {
  capabilities = ["read"]
}
path "%[1]s/metadata/%[2]s/tenants/%[4]s/*" {
  capabilities = ["read", "list"]
}
path "%[3]s/issue/%[5]s" {
  capabilities = ["update"]
}
path "%[3]s/cert/ca" {
  capabilities = ["read"]
}
path "%[3]s/crl/pem" {
  capabilities = ["read"]
}
`, kv, root, p, tenant, RoleName(tenant)), nil
}

// PutTenantPolicy writes TenantPolicy(tenant) to Vault as the policy
// named tenant-<name>.
func (c *Client) PutTenantPolicy(ctx context.Context, tenant string) error {
	hcl, err := c.TenantPolicy(tenant)
	if err != nil {
		return err
	}
	err = c.call(ctx, func(ctx context.Context) error {
		return c.api.Sys().PutPolicyWithContext(ctx, RoleName(tenant), hcl)
	})
	if err != nil {
		return fmt.Errorf("put vault policy %s: %w", RoleName(tenant), err)
	}
	return nil
}
