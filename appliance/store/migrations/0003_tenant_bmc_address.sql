-- Each node's tenant-facing BMC address: a bare IPv4 address from the
-- configured range ([nodes] tenant_bmc_range) that tenants' Foremans store
-- on the host's BMC interface and the broker resolves exactly. Unique while
-- the node exists and never changed; '' only until the appliance assigns
-- one to a node created before this migration (at start-up).
ALTER TABLE nodes ADD COLUMN tenant_bmc_address TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX nodes_tenant_bmc_address ON nodes (tenant_bmc_address) WHERE tenant_bmc_address != '';
