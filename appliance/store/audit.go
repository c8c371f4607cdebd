package store

import (
	"context"
	"fmt"

	"github.com/malleable-cloud/malleable/appliance/audit"
)

// AppendAudit adds e to the audit log and returns it with its ID.
func (s *Store) AppendAudit(ctx context.Context, e audit.Entry) (audit.Entry, error) {
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
func (s *Store) ListAudit(ctx context.Context, before int64, limit int) ([]audit.Entry, error) {
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
	out := []audit.Entry{}
	for rows.Next() {
		var e audit.Entry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.Result); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
