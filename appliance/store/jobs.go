package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
)

// ErrJobRunning means a tenant already has a running job of another kind.
var ErrJobRunning = errors.New("the tenant has a job running")

// msOrZero stores a zero time as 0.
func msOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return ms(t)
}

// timeOrZero reads 0 as the zero time.
func timeOrZero(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return fromMS(v)
}

// StartTenantJob records a running job of kind for tenant with the named
// steps, all pending. When the tenant already has a running job of the
// same kind, that job is returned instead and started is false: two
// concurrent onboardings of one tenant make one job. A running job of the
// other kind is ErrJobRunning.
func (s *Store) StartTenantJob(ctx context.Context, tenant string, kind inventory.JobKind, options string, steps []string, now time.Time) (job inventory.TenantJob, started bool, err error) {
	var id int64
	err = s.write(ctx, func(tx *sql.Tx) error {
		var runningKind string
		err := tx.QueryRowContext(ctx, `SELECT id, kind FROM tenant_jobs WHERE tenant = ? AND state = 'running'`, tenant).Scan(&id, &runningKind)
		switch {
		case err == nil && runningKind == string(kind):
			return nil
		case err == nil:
			return fmt.Errorf("%w: %s job %d", ErrJobRunning, runningKind, id)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO tenant_jobs (tenant, kind, state, options, created_at) VALUES (?, ?, 'running', ?, ?)`,
			tenant, kind, options, ms(now))
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		for i, name := range steps {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tenant_job_steps (job_id, seq, name, state) VALUES (?, ?, ?, 'pending')`, id, i, name); err != nil {
				return err
			}
		}
		started = true
		return nil
	})
	if err != nil {
		return job, false, fmt.Errorf("start %s job of %s: %w", kind, tenant, err)
	}
	job, err = s.TenantJob(ctx, id)
	return job, started, err
}

// UpdateJobStep records step seq of job id as it now stands.
func (s *Store) UpdateJobStep(ctx context.Context, id int64, seq int, st inventory.JobStep) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tenant_job_steps SET state = ?, detail = ?, started_at = ?, finished_at = ?
			WHERE job_id = ? AND seq = ?`, st.State, st.Detail, msOrZero(st.StartedAt), msOrZero(st.FinishedAt), id, seq)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("step %d of job %d: %w", seq, id, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update job %d: %w", id, err)
	}
	return nil
}

// FinishTenantJob ends job id as done or failed (with why).
func (s *Store) FinishTenantJob(ctx context.Context, id int64, state inventory.JobState, why string, now time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE tenant_jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?`, state, why, ms(now), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("finish job %d: %w", id, err)
	}
	return nil
}

const jobCols = `id, tenant, kind, state, options, error, created_at, finished_at`

func scanJob(row scanner) (inventory.TenantJob, error) {
	var j inventory.TenantJob
	var created, finished int64
	err := row.Scan(&j.ID, &j.Tenant, &j.Kind, &j.State, &j.Options, &j.Error, &created, &finished)
	j.CreatedAt, j.FinishedAt = fromMS(created), timeOrZero(finished)
	return j, err
}

func scanStep(row scanner) (inventory.JobStep, error) {
	var st inventory.JobStep
	var started, finished int64
	err := row.Scan(&st.Name, &st.State, &st.Detail, &started, &finished)
	st.StartedAt, st.FinishedAt = timeOrZero(started), timeOrZero(finished)
	return st, err
}

// TenantJob returns job id with its steps in order.
func (s *Store) TenantJob(ctx context.Context, id int64) (inventory.TenantJob, error) {
	j, err := scanJob(s.r.QueryRowContext(ctx, `SELECT `+jobCols+` FROM tenant_jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return j, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return j, fmt.Errorf("get job %d: %w", id, err)
	}
	j.Steps, err = collect(ctx, s, "list job steps", scanStep,
		`SELECT name, state, detail, started_at, finished_at FROM tenant_job_steps WHERE job_id = ? ORDER BY seq`, id)
	return j, err
}

// TenantJobs returns a tenant's jobs, newest first, without their steps.
func (s *Store) TenantJobs(ctx context.Context, tenant string, limit int) ([]inventory.TenantJob, error) {
	return collect(ctx, s, "list jobs", scanJob,
		`SELECT `+jobCols+` FROM tenant_jobs WHERE tenant = ? ORDER BY id DESC LIMIT ?`, tenant, limit)
}

// RunningTenantJobs returns every running job, oldest first, without
// their steps: the jobs a restarted appliance runs again.
func (s *Store) RunningTenantJobs(ctx context.Context) ([]inventory.TenantJob, error) {
	return collect(ctx, s, "list running jobs", scanJob,
		`SELECT `+jobCols+` FROM tenant_jobs WHERE state = 'running' ORDER BY id`)
}

// SetTenantState records where a tenant is in its lifecycle and, when
// foremanURL is not empty, where its Foreman answers.
func (s *Store) SetTenantState(ctx context.Context, name string, state inventory.TenantState, foremanURL string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tenants SET state = ?, foreman_url = CASE WHEN ? = '' THEN foreman_url ELSE ? END
			WHERE name = ?`, state, foremanURL, foremanURL, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("tenant", name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set state of tenant %s: %w", name, err)
	}
	return nil
}

// LeasedNodes returns the nodes tenant holds now or has a lease of that
// has not ended by now, by name: the hosts its Foreman keeps.
func (s *Store) LeasedNodes(ctx context.Context, tenant string, now time.Time) ([]inventory.Node, error) {
	return collect(ctx, s, "list a tenant's leased nodes", scanNode, nodeQuery+`
		WHERE n.id IN (SELECT h.node_id FROM node_holders h JOIN tenants t ON t.id = h.tenant_id WHERE t.name = ?)
		   OR n.id IN (SELECT l.node_id FROM leases l JOIN tenants t ON t.id = l.tenant_id
		               WHERE t.name = ? AND l.cancelled = 0 AND l.end_at > ?)
		ORDER BY n.name`, tenant, tenant, ms(now))
}

// EndTenantLeases ends every lease of tenant that has not ended by now:
// an active one ends now, a scheduled one is cancelled. It returns how
// many it changed; the reconciler hands the nodes over.
func (s *Store) EndTenantLeases(ctx context.Context, tenant string, now time.Time) (int, error) {
	changed := 0
	err := s.write(ctx, func(tx *sql.Tx) error {
		changed = 0
		ids, err := queryIDs(ctx, tx, `SELECT l.id FROM leases l JOIN tenants t ON t.id = l.tenant_id
			WHERE t.name = ? AND l.cancelled = 0 AND l.end_at > ?`, tenant, ms(now))
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := cancelIn(ctx, tx, id, now); err != nil {
				return err
			}
			changed++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("end %s's leases: %w", tenant, err)
	}
	return changed, nil
}
