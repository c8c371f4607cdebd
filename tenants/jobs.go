// Package tenants is the tenant lifecycle: onboarding a tenant (its own
// Docker network, Foreman, database and M2 smart-proxy, its secrets and
// certificates, the proxy registered in its Foreman) and offboarding it,
// as jobs of named, idempotent steps that a restarted appliance runs
// again, and keeping running tenants as specified on every pass.
package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
)

// JobStore keeps jobs and tenants' states (appliance/store).
type JobStore interface {
	StartTenantJob(ctx context.Context, tenant string, kind inventory.JobKind, options string, steps []string, now time.Time) (inventory.TenantJob, bool, error)
	UpdateJobStep(ctx context.Context, id int64, seq int, st inventory.JobStep) error
	FinishTenantJob(ctx context.Context, id int64, state inventory.JobState, why string, now time.Time) error
	TenantJob(ctx context.Context, id int64) (inventory.TenantJob, error)
	RunningTenantJobs(ctx context.Context) ([]inventory.TenantJob, error)
	SetTenantState(ctx context.Context, name string, state inventory.TenantState, foremanURL string) error
}

// Step is one named step of a job. Run must be idempotent: a job is run
// again from its first step after a failure or a restart. It returns a
// short detail for the job's record.
type Step struct {
	Name string
	Run  func(ctx context.Context) (detail string, err error)
}

// Planner gives the steps of a tenant's job of a kind, with its options
// (the JSON kept with the job).
type Planner interface {
	Steps(tenant string, kind inventory.JobKind, options string) ([]Step, error)
	// StepNames are the names of the steps of kind, to record with a new job.
	StepNames(kind inventory.JobKind) []string
	// Finished is told how a job ended, to record the tenant's state.
	Finished(ctx context.Context, tenant string, kind inventory.JobKind, err error) error
}

// TenantLocks serialise the work on each tenant: a job holds its tenant's
// lock from its first step to its end, and the drift pass skips a tenant
// whose lock is held. The zero value is ready.
type TenantLocks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (l *TenantLocks) of(tenant string) *sync.Mutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*sync.Mutex{}
	}
	if l.m[tenant] == nil {
		l.m[tenant] = &sync.Mutex{}
	}
	return l.m[tenant]
}

// Jobs runs tenant jobs in the daemon's context, each tenant's one at a
// time, different tenants' at once.
type Jobs struct {
	Store   JobStore
	Planner Planner
	Log     *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// StepTimeout bounds each step; 10 minutes when zero.
	StepTimeout time.Duration
	// Locks are shared with the drift pass; Jobs' own when nil.
	Locks *TenantLocks

	mu      sync.Mutex
	queue   chan int64
	running map[int64]bool
}

// ErrNotServing means Start was called before Serve, or after it ended.
var ErrNotServing = errors.New("tenant jobs are not being served")

func (j *Jobs) now() time.Time {
	if j.Now == nil {
		return time.Now().UTC()
	}
	return j.Now().UTC()
}

func (j *Jobs) init() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.queue == nil {
		j.queue = make(chan int64, 64)
		j.running = map[int64]bool{}
	}
	if j.Locks == nil {
		j.Locks = &TenantLocks{}
	}
}

// Start records a job of kind for tenant, or finds the one already
// running (two concurrent onboardings make one job), and has Serve run
// it. options are marshalled to JSON and kept with the job.
func (j *Jobs) Start(ctx context.Context, tenant string, kind inventory.JobKind, options any) (inventory.TenantJob, error) {
	j.init()
	opts, err := json.Marshal(options)
	if err != nil {
		return inventory.TenantJob{}, fmt.Errorf("job options: %w", err)
	}
	if _, err := j.Planner.Steps(tenant, kind, string(opts)); err != nil {
		return inventory.TenantJob{}, err
	}
	job, started, err := j.Store.StartTenantJob(ctx, tenant, kind, string(opts), j.Planner.StepNames(kind), j.now())
	if err != nil {
		return job, err
	}
	if started {
		state := inventory.TenantOnboarding
		if kind == inventory.JobOffboard {
			state = inventory.TenantOffboarding
		}
		if err := j.Store.SetTenantState(ctx, tenant, state, ""); err != nil {
			return job, err
		}
		select {
		case j.queue <- job.ID:
		default:
			// A full queue is drained by Serve's next look at the store.
			j.Log.Warn("tenant job queue full; the job runs at the next resume", "job", job.ID)
		}
	}
	return job, nil
}

// Serve runs queued jobs, and first every job a previous run left
// running, until ctx ends; then it waits for the jobs it started.
func (j *Jobs) Serve(ctx context.Context) error {
	j.init()
	var wg sync.WaitGroup
	defer wg.Wait()
	run := func(id int64) {
		j.mu.Lock()
		if j.running[id] {
			j.mu.Unlock()
			return
		}
		j.running[id] = true
		j.mu.Unlock()
		wg.Go(func() {
			defer func() {
				j.mu.Lock()
				delete(j.running, id)
				j.mu.Unlock()
			}()
			j.run(ctx, id)
		})
	}
	resume := func() {
		jobs, err := j.Store.RunningTenantJobs(ctx)
		if err != nil {
			j.Log.Error("list running tenant jobs", "err", err)
			return
		}
		for _, job := range jobs {
			run(job.ID)
		}
	}
	resume()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-j.queue:
			run(id)
		case <-tick.C:
			resume()
		}
	}
}

// run runs job id from its first step to its end, recording each step.
func (j *Jobs) run(ctx context.Context, id int64) {
	job, err := j.Store.TenantJob(ctx, id)
	if err != nil {
		j.Log.Error("load tenant job", "job", id, "err", err)
		return
	}
	if job.State != inventory.JobRunning {
		return // finished between the listing that found it and now
	}
	lock := j.Locks.of(job.Tenant)
	lock.Lock()
	defer lock.Unlock()
	log := j.Log.With("job", id, "tenant", job.Tenant, "kind", job.Kind)
	steps, err := j.Planner.Steps(job.Tenant, job.Kind, job.Options)
	if err == nil {
		err = j.runSteps(ctx, log, job, steps)
	}
	if ctx.Err() != nil {
		log.Info("tenant job interrupted; it runs again at the next start")
		return
	}
	state, why := inventory.JobDone, ""
	if err != nil {
		state, why = inventory.JobFailed, err.Error()
		log.Error("tenant job failed", "err", err)
	} else {
		log.Info("tenant job done", "took", time.Since(job.CreatedAt).Round(time.Millisecond))
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if ferr := j.Planner.Finished(fctx, job.Tenant, job.Kind, err); ferr != nil {
		log.Error("record the tenant's state", "err", ferr)
	}
	if ferr := j.Store.FinishTenantJob(fctx, id, state, why, j.now()); ferr != nil {
		log.Error("finish tenant job", "err", ferr)
	}
}

func (j *Jobs) runSteps(ctx context.Context, log *slog.Logger, job inventory.TenantJob, steps []Step) error {
	limit := j.StepTimeout
	if limit == 0 {
		limit = 10 * time.Minute
	}
	for i, s := range steps {
		rec := inventory.JobStep{Name: s.Name, State: inventory.JobRunning, StartedAt: j.now()}
		if err := j.Store.UpdateJobStep(ctx, job.ID, i, rec); err != nil {
			return err
		}
		log.Info("tenant job step", "step", s.Name)
		sctx, cancel := context.WithTimeout(ctx, limit)
		detail, err := s.Run(sctx)
		cancel()
		rec.FinishedAt, rec.State, rec.Detail = j.now(), inventory.JobDone, detail
		if err != nil {
			rec.State, rec.Detail = inventory.JobFailed, err.Error()
		}
		if uerr := j.Store.UpdateJobStep(context.WithoutCancel(ctx), job.ID, i, rec); uerr != nil {
			return errors.Join(err, uerr)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return nil
}
