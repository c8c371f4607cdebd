package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// Of many concurrent onboardings of one tenant, one starts a job and the
// others get that same job; an offboarding meanwhile is refused.
func TestStartTenantJobIsOnePerTenant(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	steps := []string{"network", "secrets", "foreman"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[int64]int{}
	starts := 0
	for range 16 {
		wg.Go(func() {
			j, started, err := s.StartTenantJob(ctx, "acme", inventory.JobOnboard, `{}`, steps, now)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[j.ID]++
			if started {
				starts++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || starts != 1 {
		t.Fatalf("jobs %v, %d started; want one job started once", ids, starts)
	}
	var id int64
	for k := range ids {
		id = k
	}
	if _, _, err := s.StartTenantJob(ctx, "acme", inventory.JobOffboard, "", []string{"containers"}, now); !errors.Is(err, store.ErrJobRunning) {
		t.Errorf("offboard while onboarding: %v, want ErrJobRunning", err)
	}

	// Steps are recorded in order; a finished job frees the tenant.
	step := inventory.JobStep{Name: "secrets", State: inventory.JobDone, Detail: "4 secrets", StartedAt: now, FinishedAt: now.Add(time.Second)}
	if err := s.UpdateJobStep(ctx, id, 1, step); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateJobStep(ctx, id, 7, step); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update a step that does not exist: %v, want ErrNotFound", err)
	}
	if err := s.FinishTenantJob(ctx, id, inventory.JobFailed, "foreman: no image", now.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	j, err := s.TenantJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != inventory.JobFailed || j.Error != "foreman: no image" || len(j.Steps) != 3 ||
		j.Steps[1] != step || j.Steps[0].State != inventory.JobPending || !j.Steps[0].StartedAt.IsZero() {
		t.Errorf("job after a step and a failure: %+v", j)
	}
	if run, _ := s.RunningTenantJobs(ctx); len(run) != 0 {
		t.Errorf("running jobs after the failure: %+v", run)
	}
	j2, started, err := s.StartTenantJob(ctx, "acme", inventory.JobOffboard, "", []string{"containers"}, now)
	if err != nil || !started || j2.ID == id {
		t.Errorf("offboard after the failed onboarding: %+v %v %v", j2, started, err)
	}
	if list, _ := s.TenantJobs(ctx, "acme", 10); len(list) != 2 || list[0].ID != j2.ID {
		t.Errorf("jobs newest first: %+v", list)
	}
}
