package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/lease"
)

// ErrUnknownRef means a lease request names a node or tenant that does not
// exist. It wraps ErrNotFound.
var ErrUnknownRef = fmt.Errorf("unknown reference: %w", ErrNotFound)

const leaseQuery = `SELECT l.id, n.name, t.name, l.start_at, l.end_at, l.cancelled, l.created_at
	FROM leases l JOIN nodes n ON n.id = l.node_id JOIN tenants t ON t.id = l.tenant_id`

func scanLease(row scanner) (lease.Lease, error) {
	var l lease.Lease
	var start, end, created int64
	err := row.Scan(&l.ID, &l.Node, &l.Tenant, &start, &end, &l.Cancelled, &created)
	l.Start, l.End, l.CreatedAt = fromMS(start), fromMS(end), fromMS(created)
	return l, err
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func lookupID(ctx context.Context, q querier, table, kind, name string) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `SELECT id FROM `+table+` WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%s %q: %w", kind, name, ErrUnknownRef)
	}
	return id, err
}

// firstOverlap returns the earliest non-cancelled lease of node that
// overlaps [start, end), other than the lease numbered except.
func firstOverlap(ctx context.Context, q querier, nodeID int64, start, end time.Time, except int64) (lease.Lease, bool, error) {
	l, err := scanLease(q.QueryRowContext(ctx, leaseQuery+`
		WHERE l.node_id = ? AND l.cancelled = 0 AND l.end_at > ? AND l.start_at < ? AND l.id != ?
		ORDER BY l.start_at LIMIT 1`, nodeID, ms(start), ms(end), except))
	if errors.Is(err, sql.ErrNoRows) {
		return l, false, nil
	}
	return l, err == nil, err
}

// CreateLease records a lease of l.Node to l.Tenant over [l.Start, l.End),
// after checking lim at now. The overlap check and the insert share one
// write transaction, so of any number of concurrent overlapping requests
// exactly one succeeds; the others get a *lease.ConflictError.
func (s *Store) CreateLease(ctx context.Context, l lease.Lease, lim lease.Limits, now time.Time) (lease.Lease, error) {
	l.Start, l.End = lease.Normalize(l.Start), lease.Normalize(l.End)
	l.CreatedAt = fromMS(ms(now))
	l.Cancelled = false
	if err := lim.CheckNew(l.Start, l.End, now); err != nil {
		return l, err
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		nodeID, err := lookupID(ctx, tx, "nodes", "node", l.Node)
		if err != nil {
			return err
		}
		tenantID, err := lookupID(ctx, tx, "tenants", "tenant", l.Tenant)
		if err != nil {
			return err
		}
		if other, found, err := firstOverlap(ctx, tx, nodeID, l.Start, l.End, 0); err != nil {
			return err
		} else if found {
			return &lease.ConflictError{Existing: other}
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO leases (node_id, tenant_id, start_at, end_at, created_at) VALUES (?, ?, ?, ?, ?)`,
			nodeID, tenantID, ms(l.Start), ms(l.End), ms(l.CreatedAt))
		if err != nil {
			return err
		}
		l.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return l, fmt.Errorf("create lease of %s for %s: %w", l.Node, l.Tenant, err)
	}
	return l, nil
}

// GetLease returns lease id.
func (s *Store) GetLease(ctx context.Context, id int64) (lease.Lease, error) {
	return getLease(ctx, s.r, id)
}

func getLease(ctx context.Context, q querier, id int64) (lease.Lease, error) {
	l, err := scanLease(q.QueryRowContext(ctx, leaseQuery+` WHERE l.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return l, fmt.Errorf("lease %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return l, fmt.Errorf("get lease %d: %w", id, err)
	}
	return l, nil
}

// LeaseFilter selects leases. Zero fields select everything.
type LeaseFilter struct {
	Node   string
	Tenant string
	// From and To select leases overlapping [From, To); either may be zero.
	From, To time.Time
	// State selects leases in that state at Now.
	State lease.State
	Now   time.Time
	Limit int // at most this many, 0 for no limit
}

// ListLeases returns the leases f selects, by start time.
func (s *Store) ListLeases(ctx context.Context, f LeaseFilter) ([]lease.Lease, error) {
	var where []string
	var args []any
	add := func(cond string, a ...any) { where = append(where, cond); args = append(args, a...) }
	if f.Node != "" {
		add(`l.node_id = (SELECT id FROM nodes WHERE name = ?)`, f.Node)
	}
	if f.Tenant != "" {
		add(`l.tenant_id = (SELECT id FROM tenants WHERE name = ?)`, f.Tenant)
	}
	if !f.From.IsZero() {
		add(`l.end_at > ?`, ms(f.From))
	}
	if !f.To.IsZero() {
		add(`l.start_at < ?`, ms(f.To))
	}
	if f.State != "" && f.Now.IsZero() {
		return nil, fmt.Errorf("list leases: a state filter needs Now")
	}
	now := ms(f.Now)
	switch f.State {
	case "":
	case lease.Cancelled:
		add(`l.cancelled = 1`)
	case lease.Scheduled:
		add(`l.cancelled = 0 AND l.start_at > ?`, now)
	case lease.Active:
		add(`l.cancelled = 0 AND l.start_at <= ? AND l.end_at > ?`, now, now)
	case lease.Ended:
		add(`l.cancelled = 0 AND l.end_at <= ?`, now)
	default:
		return nil, fmt.Errorf("list leases: unknown state %q", f.State)
	}
	q := leaseQuery
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY l.start_at, l.id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return collect(ctx, s, "list leases", scanLease, q, args...)
}

// CancelLease cancels lease id at now (see lease.Cancel) and returns it as
// it now stands.
func (s *Store) CancelLease(ctx context.Context, id int64, now time.Time) (lease.Lease, error) {
	var out lease.Lease
	err := s.write(ctx, func(tx *sql.Tx) (err error) {
		out, err = cancelIn(ctx, tx, id, now)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("cancel lease %d: %w", id, err)
	}
	return out, nil
}

// cancelIn cancels lease id at now inside tx.
func cancelIn(ctx context.Context, tx *sql.Tx, id int64, now time.Time) (lease.Lease, error) {
	l, err := getLease(ctx, tx, id)
	if err != nil {
		return l, err
	}
	out, err := lease.Cancel(l, now)
	if err != nil {
		return out, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE leases SET end_at = ?, cancelled = ? WHERE id = ?`, ms(out.End), out.Cancelled, id)
	return out, err
}

// queryIDs returns the ids a query inside tx selects.
func queryIDs(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, errors.Join(rows.Err(), rows.Close())
}

// ExtendLeaseFunc moves the end of lease id to newEnd(its current end),
// checking lim and the node's other leases in the same write transaction;
// the new end is computed inside that transaction, so that concurrent relative
// extensions ("24 hours more") add up instead of colliding.
func (s *Store) ExtendLeaseFunc(ctx context.Context, id int64, newEnd func(cur time.Time) time.Time, lim lease.Limits, now time.Time) (lease.Lease, error) {
	var out lease.Lease
	err := s.write(ctx, func(tx *sql.Tx) error {
		l, err := getLease(ctx, tx, id)
		if err != nil {
			return err
		}
		end := lease.Normalize(newEnd(l.End))
		if err := lim.CheckExtend(l, end, now); err != nil {
			return err
		}
		var nodeID int64
		if err := tx.QueryRowContext(ctx, `SELECT node_id FROM leases WHERE id = ?`, id).Scan(&nodeID); err != nil {
			return err
		}
		if other, found, err := firstOverlap(ctx, tx, nodeID, l.Start, end, id); err != nil {
			return err
		} else if found {
			return &lease.ConflictError{Existing: other}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE leases SET end_at = ? WHERE id = ?`, ms(end), id); err != nil {
			return err
		}
		l.End = end
		out = l
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("extend lease %d: %w", id, err)
	}
	return out, nil
}
