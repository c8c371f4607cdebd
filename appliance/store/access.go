package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// TokenHash returns the hex SHA-256 of a broker token: what the store keeps.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// SetTenantToken replaces tenant's broker credential with the token whose
// hash is given; the previous token stops working at once.
func (s *Store) SetTenantToken(ctx context.Context, tenant, hash string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tenants SET broker_token_sha256 = ? WHERE name = ?`, hash, tenant)
		if err != nil {
			return fmt.Errorf("set token of %s: %w", tenant, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("tenant", tenant)
		}
		return nil
	})
}

// TenantByToken returns the tenant whose broker token hashes to hash.
func (s *Store) TenantByToken(ctx context.Context, hash string) (string, error) {
	if hash == "" {
		return "", fmt.Errorf("tenant by token: %w", ErrNotFound)
	}
	var name string
	err := s.hot.tenantByToken.QueryRowContext(ctx, hash).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("tenant by token: %w", ErrNotFound)
	}
	return name, err
}

// FindNode returns the node named ref or, failing that, the one whose
// tenant-facing BMC address is ref, exactly: that address is what a
// tenant's Foreman stores for the host. Real BMC addresses never resolve.
func (s *Store) FindNode(ctx context.Context, ref string) (inventory.Node, error) {
	n, err := s.GetNode(ctx, ref)
	if !errors.Is(err, ErrNotFound) {
		return n, err
	}
	n, err = scanNode(s.hot.nodeByAddress.QueryRowContext(ctx, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return n, notFound("node", ref)
	}
	if err != nil {
		return n, fmt.Errorf("find node %s: %w", ref, err)
	}
	return n, nil
}

// HasLeased reports whether tenant has, or ever had, a lease of node —
// cancelled ones included, since an active lease cancelled in its first
// second is recorded as cancelled although the tenant held the node: the
// nodes a tenant may know of.
func (s *Store) HasLeased(ctx context.Context, node, tenant string) (bool, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM leases l JOIN nodes n ON n.id = l.node_id JOIN tenants t ON t.id = l.tenant_id
		WHERE n.name = ? AND t.name = ?`, node, tenant).Scan(&n)
	return n > 0, err
}

// NextLease returns tenant's earliest non-cancelled lease of node that has
// not ended at now, and whether there is one.
func (s *Store) NextLease(ctx context.Context, node, tenant string, now time.Time) (lease.Lease, bool, error) {
	l, err := scanLease(s.hot.nextLease.QueryRowContext(ctx, node, tenant, ms(now)))
	if errors.Is(err, sql.ErrNoRows) {
		return l, false, nil
	}
	return l, err == nil, err
}

// NodeProject returns the project the embedded allocator has node in, or "".
func (s *Store) NodeProject(ctx context.Context, node string) (string, error) {
	var p sql.NullString
	err := s.r.QueryRowContext(ctx, `SELECT a.project FROM nodes n LEFT JOIN allocations a ON a.node_id = n.id WHERE n.name = ?`, node).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("node", node)
	}
	return p.String, err
}

// NodeProjects returns every allocated node's project, by node name.
func (s *Store) NodeProjects(ctx context.Context) (map[string]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT n.name, a.project FROM allocations a JOIN nodes n ON n.id = a.node_id`)
	if err != nil {
		return nil, fmt.Errorf("node projects: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, p string
		if err := rows.Scan(&n, &p); err != nil {
			return nil, err
		}
		out[n] = p
	}
	return out, rows.Err()
}

// ErrAllocated means the node is already in another project.
var ErrAllocated = errors.New("node is allocated to another project")

// AllocateNode puts node in project. It succeeds if the node is already
// there and fails with ErrAllocated if it is in another one.
func (s *Store) AllocateNode(ctx context.Context, node, project string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := lookupID(ctx, tx, "nodes", "node", node)
		if err != nil {
			return err
		}
		var cur string
		err = tx.QueryRowContext(ctx, `SELECT project FROM allocations WHERE node_id = ?`, id).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO allocations (node_id, project) VALUES (?, ?)`, id, project)
			return err
		case err != nil:
			return err
		case cur == project:
			return nil
		}
		return fmt.Errorf("node %s is in project %s: %w", node, cur, ErrAllocated)
	})
}

// ReleaseNode takes node out of project. It succeeds if the node is already
// free and fails with ErrAllocated if it is in another project.
func (s *Store) ReleaseNode(ctx context.Context, node, project string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := lookupID(ctx, tx, "nodes", "node", node)
		if err != nil {
			return err
		}
		var cur string
		err = tx.QueryRowContext(ctx, `SELECT project FROM allocations WHERE node_id = ?`, id).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return err
		case cur != project:
			return fmt.Errorf("node %s is in project %s, not %s: %w", node, cur, project, ErrAllocated)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM allocations WHERE node_id = ?`, id)
		return err
	})
}
