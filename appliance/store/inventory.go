package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
)

// CreateTenant records a new tenant. t must be normalised; its State and
// CreatedAt are set here.
func (s *Store) CreateTenant(ctx context.Context, t inventory.Tenant, now time.Time) (inventory.Tenant, error) {
	t.State = inventory.TenantRegistered
	t.CreatedAt = fromMS(ms(now))
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO tenants (name, description, foreman_url, state, created_at) VALUES (?, ?, ?, ?, ?)`,
			t.Name, t.Description, t.ForemanURL, t.State, ms(t.CreatedAt))
		return err
	})
	if isUnique(err) {
		return t, fmt.Errorf("tenant %q: %w", t.Name, ErrExists)
	}
	if err != nil {
		return t, fmt.Errorf("create tenant %s: %w", t.Name, err)
	}
	return t, nil
}

const tenantCols = `name, description, foreman_url, state, created_at`

func scanTenant(row scanner) (inventory.Tenant, error) {
	var t inventory.Tenant
	var created int64
	err := row.Scan(&t.Name, &t.Description, &t.ForemanURL, &t.State, &created)
	t.CreatedAt = fromMS(created)
	return t, err
}

// GetTenant returns the tenant called name.
func (s *Store) GetTenant(ctx context.Context, name string) (inventory.Tenant, error) {
	t, err := scanTenant(s.r.QueryRowContext(ctx, `SELECT `+tenantCols+` FROM tenants WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return t, notFound("tenant", name)
	}
	if err != nil {
		return t, fmt.Errorf("get tenant %s: %w", name, err)
	}
	return t, nil
}

// ListTenants returns every tenant, by name.
func (s *Store) ListTenants(ctx context.Context) ([]inventory.Tenant, error) {
	return collect(ctx, s, "list tenants", scanTenant, `SELECT `+tenantCols+` FROM tenants ORDER BY name`)
}

// DeleteTenant removes a tenant and its past leases. A tenant that still
// holds a scheduled or active lease is refused with ErrInUse.
func (s *Store) DeleteTenant(ctx context.Context, name string, now time.Time) error {
	return s.deleteLeased(ctx, "tenant", "tenants", "tenant_id", name, now)
}

// deleteLeased deletes a tenant or node unless a live lease still refers to
// it, checking and deleting in one transaction.
func (s *Store) deleteLeased(ctx context.Context, kind, table, col, name string, now time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM `+table+` WHERE name = ?`, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound(kind, name)
		}
		if err != nil {
			return fmt.Errorf("delete %s %s: %w", kind, name, err)
		}
		var live int
		err = tx.QueryRowContext(ctx, `SELECT count(*) FROM leases WHERE `+col+` = ? AND cancelled = 0 AND end_at > ?`,
			id, ms(now)).Scan(&live)
		if err != nil {
			return fmt.Errorf("delete %s %s: %w", kind, name, err)
		}
		if live > 0 {
			return fmt.Errorf("%s %q has %d scheduled or active lease(s); cancel them first: %w", kind, name, live, ErrInUse)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE id = ?`, id); err != nil {
			return fmt.Errorf("delete %s %s: %w", kind, name, err)
		}
		return nil
	})
}

// CreateNode records a new node. n must be normalised. A MAC address
// already registered to another node is refused with ErrExists.
func (s *Store) CreateNode(ctx context.Context, n inventory.Node, now time.Time) (inventory.Node, error) {
	n.CreatedAt = fromMS(ms(now))
	chosen := n.TenantBMCAddress
	p := s.tenantBMCRange()
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := checkRealBMCHost(ctx, tx, n); err != nil {
			return err
		}
		if chosen != "" {
			if err := checkTenantBMCAddress(ctx, tx, n, p); err != nil {
				return err
			}
		} else {
			addr, err := freeTenantBMCAddress(ctx, tx, p)
			if err != nil {
				return err
			}
			n.TenantBMCAddress = addr
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO nodes (name, description, bmc_host, bmc_port, bmc_user, tenant_bmc_address, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			n.Name, n.Description, n.BMC.Host, n.BMC.Port, n.BMC.User, n.TenantBMCAddress, ms(n.CreatedAt))
		if isUnique(err) {
			var owner string
			if tx.QueryRowContext(ctx, `SELECT name FROM nodes WHERE tenant_bmc_address = ?`, n.TenantBMCAddress).Scan(&owner) == nil {
				return fmt.Errorf("tenant-facing BMC address %s belongs to node %q: %w", n.TenantBMCAddress, owner, ErrExists)
			}
			return fmt.Errorf("node %q: %w", n.Name, ErrExists)
		}
		if err != nil {
			return err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for _, mac := range n.MACs {
			_, err := tx.ExecContext(ctx, `INSERT INTO node_macs (mac, node_id) VALUES (?, ?)`, mac, id)
			if isUnique(err) {
				var owner string
				_ = tx.QueryRowContext(ctx, `SELECT n.name FROM node_macs m JOIN nodes n ON n.id = m.node_id WHERE m.mac = ?`, mac).Scan(&owner)
				return fmt.Errorf("MAC %s belongs to node %q: %w", mac, owner, ErrExists)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	var fe *inventory.FieldError
	if err != nil && !errors.Is(err, ErrExists) && !errors.As(err, &fe) {
		return n, fmt.Errorf("create node %s: %w", n.Name, err)
	}
	return n, err
}

// checkRealBMCHost refuses a node whose real BMC address is another node's
// tenant-facing one: a tenant's reference to it would be ambiguous.
func checkRealBMCHost(ctx context.Context, tx *sql.Tx, n inventory.Node) error {
	if n.BMC.Host == "" {
		return nil
	}
	var owner string
	err := tx.QueryRowContext(ctx, `SELECT name FROM nodes WHERE tenant_bmc_address = ? LIMIT 1`, n.BMC.Host).Scan(&owner)
	switch {
	case err == nil:
		return &inventory.FieldError{Field: "bmc.host", Reason: fmt.Sprintf("%s is the tenant-facing BMC address of node %s", n.BMC.Host, owner)}
	case errors.Is(err, sql.ErrNoRows):
		return nil
	}
	return err
}

const nodeQuery = `SELECT n.name, n.description, n.bmc_host, n.bmc_port, n.bmc_user, n.tenant_bmc_address, n.created_at,
	coalesce((SELECT group_concat(mac, ',') FROM (SELECT mac FROM node_macs WHERE node_id = n.id ORDER BY mac)), '')
	FROM nodes n`

func scanNode(row scanner) (inventory.Node, error) {
	var n inventory.Node
	var created int64
	var macs string
	err := row.Scan(&n.Name, &n.Description, &n.BMC.Host, &n.BMC.Port, &n.BMC.User, &n.TenantBMCAddress, &created, &macs)
	n.CreatedAt = fromMS(created)
	n.MACs = []string{}
	if macs != "" {
		n.MACs = strings.Split(macs, ",")
	}
	return n, err
}

// GetNode returns the node called name.
func (s *Store) GetNode(ctx context.Context, name string) (inventory.Node, error) {
	n, err := scanNode(s.hot.nodeByName.QueryRowContext(ctx, name))
	if errors.Is(err, sql.ErrNoRows) {
		return n, notFound("node", name)
	}
	if err != nil {
		return n, fmt.Errorf("get node %s: %w", name, err)
	}
	return n, nil
}

// ListNodes returns every node, by name.
func (s *Store) ListNodes(ctx context.Context) ([]inventory.Node, error) {
	return collect(ctx, s, "list nodes", scanNode, nodeQuery+` ORDER BY n.name`)
}

// DeleteNode removes a node and its past leases. A node with a scheduled or
// active lease is refused with ErrInUse.
func (s *Store) DeleteNode(ctx context.Context, name string, now time.Time) error {
	return s.deleteLeased(ctx, "node", "nodes", "node_id", name, now)
}
