package tenants_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/store"
	"github.com/malleable-cloud/malleable/tenants"
)

// planner is a Planner whose steps record their runs and may be told to
// fail or to block.
type planner struct {
	mu       sync.Mutex
	ran      []string
	failOnce map[string]error
	block    chan struct{} // the first step waits for it when set
	finished []string
}

func (p *planner) StepNames(kind inventory.JobKind) []string { return []string{"one", "two", "three"} }

func (p *planner) Steps(tenant string, kind inventory.JobKind, _ string) ([]tenants.Step, error) {
	var out []tenants.Step
	for i, name := range p.StepNames(kind) {
		out = append(out, tenants.Step{Name: name, Run: func(ctx context.Context) (string, error) {
			if i == 0 && p.block != nil {
				select {
				case <-p.block:
				case <-ctx.Done():
					return "", ctx.Err()
				}
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			p.ran = append(p.ran, tenant+"/"+name)
			if err := p.failOnce[name]; err != nil {
				delete(p.failOnce, name)
				return "", err
			}
			return name + " done", nil
		}})
	}
	return out, nil
}

func (p *planner) Finished(_ context.Context, tenant string, kind inventory.JobKind, err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished = append(p.finished, tenant)
	return nil
}

func (p *planner) runs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ran)
}

func newStore(t *testing.T, tenantNames ...string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, n := range tenantNames {
		if _, err := st.CreateTenant(context.Background(), inventory.Tenant{Name: n}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// waitJob waits for job id to end.
func waitJob(t *testing.T, st *store.Store, id int64) inventory.TenantJob {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err := st.TenantJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != inventory.JobRunning {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still running: %+v", id, j)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serve(t *testing.T, j *tenants.Jobs) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { j.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// Concurrent starts of one tenant's onboarding make one job, whose steps
// run once, in order; two tenants' jobs run at once.
func TestJobsOnePerTenant(t *testing.T) {
	st := newStore(t, "acme", "globex")
	p := &planner{block: make(chan struct{})}
	j := &tenants.Jobs{Store: st, Planner: p, Log: slog.New(slog.DiscardHandler)}
	serve(t, j)
	ids := make(chan int64, 20)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			tenant := []string{"acme", "globex"}[i%2]
			job, err := j.Start(context.Background(), tenant, inventory.JobOnboard, struct{}{})
			if err != nil {
				t.Error(err)
				return
			}
			ids <- job.ID
		})
	}
	wg.Wait()
	close(ids)
	distinct := map[int64]bool{}
	for id := range ids {
		distinct[id] = true
	}
	if len(distinct) != 2 {
		t.Fatalf("jobs %v, want one per tenant", distinct)
	}
	close(p.block)
	for id := range distinct {
		if job := waitJob(t, st, id); job.State != inventory.JobDone || job.Steps[2].Detail != "three done" {
			t.Errorf("job %d: %+v", id, job)
		}
	}
	got := p.runs()
	for _, tenant := range []string{"acme", "globex"} {
		var mine []string
		for _, r := range got {
			if len(r) > len(tenant) && r[:len(tenant)+1] == tenant+"/" {
				mine = append(mine, r[len(tenant)+1:])
			}
		}
		if !slices.Equal(mine, []string{"one", "two", "three"}) {
			t.Errorf("%s's steps ran %v, want one, two, three once each", tenant, mine)
		}
	}
}

// A failed step fails the job and leaves the later steps pending; the
// next start runs every step again and finishes.
func TestJobsFailThenFinish(t *testing.T) {
	st := newStore(t, "acme")
	p := &planner{failOnce: map[string]error{"two": errors.New("Foreman did not answer")}}
	j := &tenants.Jobs{Store: st, Planner: p, Log: slog.New(slog.DiscardHandler)}
	serve(t, j)
	job, err := j.Start(context.Background(), "acme", inventory.JobOnboard, nil)
	if err != nil {
		t.Fatal(err)
	}
	job = waitJob(t, st, job.ID)
	if job.State != inventory.JobFailed || job.Error != "two: Foreman did not answer" ||
		job.Steps[1].State != inventory.JobFailed || job.Steps[2].State != inventory.JobPending {
		t.Fatalf("failed job: %+v", job)
	}
	again, err := j.Start(context.Background(), "acme", inventory.JobOnboard, nil)
	if err != nil || again.ID == job.ID {
		t.Fatalf("start again: %+v %v", again, err)
	}
	if again = waitJob(t, st, again.ID); again.State != inventory.JobDone {
		t.Fatalf("second run: %+v", again)
	}
	if want := []string{"acme/one", "acme/two", "acme/one", "acme/two", "acme/three"}; !slices.Equal(p.runs(), want) {
		t.Errorf("runs %v, want %v", p.runs(), want)
	}
}

// A job a stopped appliance left running is run again by the next Serve.
func TestJobsResumeAfterRestart(t *testing.T) {
	st := newStore(t, "acme")
	ctx := context.Background()
	left, _, err := st.StartTenantJob(ctx, "acme", inventory.JobOnboard, "{}", []string{"one", "two", "three"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &planner{}
	serve(t, &tenants.Jobs{Store: st, Planner: p, Log: slog.New(slog.DiscardHandler)})
	if job := waitJob(t, st, left.ID); job.State != inventory.JobDone || len(p.runs()) != 3 {
		t.Errorf("resumed job: %+v, runs %v", job, p.runs())
	}
}
