package store

import (
	"context"
	"fmt"
	"time"
)

// AuditEntry is one line of the append-only audit log.
type AuditEntry struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
	Result string    `json:"result"`
}

// AppendAudit adds e to the audit log and returns it with its ID.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	e.At = fromMS(ms(e.At))
	res, err := s.w.ExecContext(ctx,
		`INSERT INTO audit (at, actor, action, target, detail, result) VALUES (?, ?, ?, ?, ?, ?)`,
		ms(e.At), e.Actor, e.Action, e.Target, e.Detail, e.Result)
	if err != nil {
		return e, fmt.Errorf("append audit %s %s: %w", e.Action, e.Target, err)
	}
	e.ID, err = res.LastInsertId()
	return e, err
}

// ListAudit returns up to limit entries (100 if limit is not positive) with
// IDs below before (0 for the newest), newest first.
func (s *Store) ListAudit(ctx context.Context, before int64, limit int) ([]AuditEntry, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.r.QueryContext(ctx,
		`SELECT id, at, actor, action, target, detail, result FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?`,
		before, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.Result); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
