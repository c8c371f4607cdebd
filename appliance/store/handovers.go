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

// ErrHandoverOpen means the node already has an unfinished handover.
var ErrHandoverOpen = errors.New("node has an unfinished handover")

const handoverQuery = `SELECT h.id, n.name, h.from_tenant, h.to_tenant, h.step, h.status, h.attempts,
	h.last_error, h.created_at, h.updated_at FROM handovers h JOIN nodes n ON n.id = h.node_id`

func scanHandover(row scanner) (lease.Handover, error) {
	var h lease.Handover
	var created, updated int64
	err := row.Scan(&h.ID, &h.Node, &h.From, &h.To, &h.Step, &h.Status, &h.Attempts, &h.LastError, &created, &updated)
	h.CreatedAt, h.UpdatedAt = fromMS(created), fromMS(updated)
	return h, err
}

// CreateHandover opens a handover of node from one tenant to another
// (either may be empty), starting at the fence step.
func (s *Store) CreateHandover(ctx context.Context, node, from, to string, now time.Time) (lease.Handover, error) {
	h := lease.Handover{Node: node, From: from, To: to, Step: lease.StepFence, Status: lease.HandoverRunning,
		CreatedAt: fromMS(ms(now)), UpdatedAt: fromMS(ms(now))}
	err := s.write(ctx, func(tx *sql.Tx) error {
		nodeID, err := lookupID(ctx, tx, "nodes", "node", node)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO handovers (node_id, from_tenant, to_tenant, step, status, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, nodeID, from, to, h.Step, h.Status, ms(now), ms(now))
		if isUnique(err) {
			return ErrHandoverOpen
		}
		if err != nil {
			return err
		}
		h.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return h, fmt.Errorf("create handover of %s: %w", node, err)
	}
	return h, nil
}

// GetHandover returns handover id.
func (s *Store) GetHandover(ctx context.Context, id int64) (lease.Handover, error) {
	h, err := scanHandover(s.r.QueryRowContext(ctx, handoverQuery+` WHERE h.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("handover %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return h, fmt.Errorf("get handover %d: %w", id, err)
	}
	return h, nil
}

// HandoverFilter selects handovers; zero fields select everything.
type HandoverFilter struct {
	Node   string
	Status lease.HandoverStatus
	Open   bool // running or stuck
	Limit  int
}

// ListHandovers returns the handovers f selects, newest first.
func (s *Store) ListHandovers(ctx context.Context, f HandoverFilter) ([]lease.Handover, error) {
	var where []string
	var args []any
	if f.Node != "" {
		where, args = append(where, `n.name = ?`), append(args, f.Node)
	}
	if f.Status != "" {
		where, args = append(where, `h.status = ?`), append(args, f.Status)
	}
	if f.Open {
		where = append(where, `h.status != 'done'`)
	}
	q := handoverQuery
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY h.id DESC"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return collect(ctx, s, "list handovers", scanHandover, q, args...)
}

// HandoverJournal returns handover id's journal, oldest first.
func (s *Store) HandoverJournal(ctx context.Context, id int64) ([]lease.JournalEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT step, phase, at, detail FROM handover_journal WHERE handover_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("handover %d journal: %w", id, err)
	}
	defer rows.Close()
	out := []lease.JournalEntry{}
	for rows.Next() {
		var e lease.JournalEntry
		var at int64
		if err := rows.Scan(&e.Step, &e.Phase, &at, &e.Detail); err != nil {
			return nil, err
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// RetryHandover sets a stuck handover running again with a fresh attempt
// count; the next reconcile pass resumes it at its failed step.
func (s *Store) RetryHandover(ctx context.Context, id int64, now time.Time) (lease.Handover, error) {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var status, step string
		err := tx.QueryRowContext(ctx, `SELECT status, step FROM handovers WHERE id = ?`, id).Scan(&status, &step)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("handover %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if status != string(lease.HandoverStuck) {
			return fmt.Errorf("handover %d is %s, not stuck: %w", id, status, lease.ErrIllegalState)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE handovers SET status = 'running', attempts = 0, updated_at = ? WHERE id = ?`, ms(now), id); err != nil {
			return err
		}
		return journal(ctx, tx, id, lease.Step(step), "retry", "retried by an admin", now)
	})
	if err != nil {
		return lease.Handover{}, fmt.Errorf("retry handover %d: %w", id, err)
	}
	return s.GetHandover(ctx, id)
}

func journal(ctx context.Context, tx *sql.Tx, id int64, step lease.Step, phase, detail string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO handover_journal (handover_id, step, phase, at, detail) VALUES (?, ?, ?, ?, ?)`,
		id, step, phase, ms(now), detail)
	return err
}

// Journal adapts the store to lease.Journal with a clock.
type Journal struct {
	Store *Store
	Now   func() time.Time
}

var _ lease.Journal = Journal{}

// Intent records that step is about to act.
func (j Journal) Intent(ctx context.Context, h lease.Handover, step lease.Step) error {
	return j.Store.write(ctx, func(tx *sql.Tx) error {
		return journal(ctx, tx, h.ID, step, "intent", "", j.Now())
	})
}

// Complete records that step is done, moves the handover to the next step
// and, for fence and activate, changes the node's holder in the same
// transaction.
func (j Journal) Complete(ctx context.Context, h lease.Handover, step lease.Step, skipped string) error {
	now := j.Now()
	next := step.Next()
	status := lease.HandoverRunning
	if next == lease.StepDone {
		status = lease.HandoverDone
	}
	return j.Store.write(ctx, func(tx *sql.Tx) error {
		var cur string
		if err := tx.QueryRowContext(ctx, `SELECT step FROM handovers WHERE id = ?`, h.ID).Scan(&cur); err != nil {
			return err
		}
		if cur != string(step) {
			return fmt.Errorf("handover %d is at step %s, not %s", h.ID, cur, step)
		}
		switch step {
		case lease.StepFence:
			if err := setHolder(ctx, tx, h.Node, ""); err != nil {
				return err
			}
		case lease.StepActivate:
			if err := setHolder(ctx, tx, h.Node, h.To); err != nil {
				return err
			}
		}
		phase, detail := "done", ""
		if skipped != "" {
			phase, detail = "skipped", skipped
		}
		if err := journal(ctx, tx, h.ID, step, phase, detail, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE handovers SET step = ?, status = ?, attempts = 0, last_error = '', updated_at = ? WHERE id = ?`,
			next, status, ms(now), h.ID)
		return err
	})
}

// Failed records a failed attempt at step.
func (j Journal) Failed(ctx context.Context, h lease.Handover, step lease.Step, stepErr error, stuck bool) error {
	now := j.Now()
	status := lease.HandoverRunning
	if stuck {
		status = lease.HandoverStuck
	}
	return j.Store.write(ctx, func(tx *sql.Tx) error {
		if err := journal(ctx, tx, h.ID, step, "failed", stepErr.Error(), now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE handovers SET status = ?, attempts = ?, last_error = ?, updated_at = ? WHERE id = ?`,
			status, h.Attempts, stepErr.Error(), ms(now), h.ID)
		return err
	})
}

// setHolder makes tenant (or nobody, when empty) the node's holder.
func setHolder(ctx context.Context, tx *sql.Tx, node, tenant string) error {
	var tenantID any
	if tenant != "" {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM tenants WHERE name = ?`, tenant).Scan(&id); err != nil {
			return fmt.Errorf("holder %s: %w", tenant, err)
		}
		tenantID = id
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO node_holders (node_id, tenant_id) SELECT id, ? FROM nodes WHERE name = ?
		ON CONFLICT (node_id) DO UPDATE SET tenant_id = excluded.tenant_id`, tenantID, node)
	return err
}

// HandoverOpen reports whether node has an unfinished (running or stuck)
// handover.
func (s *Store) HandoverOpen(ctx context.Context, node string) (bool, error) {
	var n int
	err := s.hot.handoverOpen.QueryRowContext(ctx, node).Scan(&n)
	return n > 0, err
}

// Fence clears node's holder outside any handover: drift repair.
func (s *Store) Fence(ctx context.Context, node string) error {
	return s.write(ctx, func(tx *sql.Tx) error { return setHolder(ctx, tx, node, "") })
}

// Holder returns the tenant that may drive node's power now, or "".
func (s *Store) Holder(ctx context.Context, node string) (string, error) {
	var t sql.NullString
	err := s.hot.holder.QueryRowContext(ctx, node).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return t.String, err
}

// NodeState is one node as the reconciler sees it.
type NodeState struct {
	Node string
	// Holder is the tenant that currently drives its power ("" none).
	Holder string
	// Lessee is the tenant whose lease is active at the time asked ("" none).
	Lessee string
	// Open is the node's unfinished handover, if any.
	Open *lease.Handover
}

// NodeStates returns every node's holder, active lessee at now and open
// handover, by node name: one query for the whole fleet.
func (s *Store) NodeStates(ctx context.Context, now time.Time) ([]NodeState, error) {
	t := ms(now)
	rows, err := s.r.QueryContext(ctx, `
		SELECT n.name, coalesce(ht.name, ''), coalesce(lt.name, ''),
		       h.id, h.from_tenant, h.to_tenant, h.step, h.status, h.attempts, h.last_error, h.created_at, h.updated_at
		FROM nodes n
		LEFT JOIN node_holders nh ON nh.node_id = n.id
		LEFT JOIN tenants ht ON ht.id = nh.tenant_id
		LEFT JOIN leases l ON l.node_id = n.id AND l.cancelled = 0 AND l.start_at <= ? AND l.end_at > ?
		LEFT JOIN tenants lt ON lt.id = l.tenant_id
		LEFT JOIN handovers h ON h.node_id = n.id AND h.status != 'done'
		ORDER BY n.name`, t, t)
	if err != nil {
		return nil, fmt.Errorf("node states: %w", err)
	}
	defer rows.Close()
	var out []NodeState
	for rows.Next() {
		var ns NodeState
		var id, attempts, created, updated sql.NullInt64
		var from, to, step, status, lastErr sql.NullString
		if err := rows.Scan(&ns.Node, &ns.Holder, &ns.Lessee, &id, &from, &to, &step, &status, &attempts, &lastErr, &created, &updated); err != nil {
			return nil, fmt.Errorf("node states: %w", err)
		}
		if id.Valid {
			ns.Open = &lease.Handover{ID: id.Int64, Node: ns.Node, From: from.String, To: to.String, Step: lease.Step(step.String),
				Status: lease.HandoverStatus(status.String), Attempts: int(attempts.Int64), LastError: lastErr.String,
				CreatedAt: fromMS(created.Int64), UpdatedAt: fromMS(updated.Int64)}
		}
		out = append(out, ns)
	}
	return out, rows.Err()
}
