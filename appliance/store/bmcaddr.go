package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"

	"github.com/malleable-cloud/malleable/appliance/inventory"
)

// ErrExhausted means the tenant-facing BMC range has no free address left.
var ErrExhausted = errors.New("no free address left in the tenant-facing BMC range")

// SetTenantBMCRange makes p the range new nodes' tenant-facing BMC
// addresses come from (inventory.DefaultTenantBMCRange until called), and
// gives an address to every node that has none (nodes created before the
// addresses existed). Addresses already given are never changed, even if
// they fall outside p. It returns how many nodes got one.
func (s *Store) SetTenantBMCRange(ctx context.Context, p netip.Prefix) (int, error) {
	if err := inventory.ValidateTenantBMCRange("nodes.tenant_bmc_range", p); err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.bmcRange = p
	s.mu.Unlock()
	n := 0
	err := s.write(ctx, func(tx *sql.Tx) error {
		n = 0
		ids, err := queryIDs(ctx, tx, `SELECT id FROM nodes WHERE tenant_bmc_address = '' ORDER BY id`)
		if err != nil {
			return err
		}
		for _, id := range ids {
			addr, err := freeTenantBMCAddress(ctx, tx, p)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE nodes SET tenant_bmc_address = ? WHERE id = ?`, addr, id); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("assign tenant-facing BMC addresses: %w", err)
	}
	return n, nil
}

func (s *Store) tenantBMCRange() netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bmcRange
}

// freeTenantBMCAddress returns the lowest address of p (its network and
// broadcast addresses excepted) that no node uses, as tenant-facing or as
// real BMC address.
func freeTenantBMCAddress(ctx context.Context, tx *sql.Tx, p netip.Prefix) (string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT tenant_bmc_address FROM nodes WHERE tenant_bmc_address != ''
		UNION SELECT bmc_host FROM nodes WHERE bmc_host != ''`)
	if err != nil {
		return "", err
	}
	used := map[netip.Addr]bool{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			rows.Close()
			return "", err
		}
		if ip, err := netip.ParseAddr(a); err == nil {
			used[ip] = true
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return "", err
	}
	for a := p.Addr().Next(); p.Contains(a) && p.Contains(a.Next()); a = a.Next() {
		if !used[a] {
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("%s: %w", p, ErrExhausted)
}

// checkTenantBMCAddress checks an address an admin chose for n: inside p,
// and no node's real BMC address (the unique index keeps it unique among
// tenant-facing addresses).
func checkTenantBMCAddress(ctx context.Context, tx *sql.Tx, n inventory.Node, p netip.Prefix) error {
	const field = "tenant_bmc_address"
	a, err := inventory.ParseTenantBMCAddress(field, n.TenantBMCAddress, p)
	if err != nil {
		return err
	}
	var owner string
	err = tx.QueryRowContext(ctx, `SELECT name FROM nodes WHERE bmc_host = ? LIMIT 1`, a.String()).Scan(&owner)
	switch {
	case err == nil:
		return &inventory.FieldError{Field: field, Reason: fmt.Sprintf("%s is the real BMC address of node %s", a, owner)}
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	if a.String() == n.BMC.Host {
		return &inventory.FieldError{Field: field, Reason: "must differ from the node's real BMC address"}
	}
	return nil
}
