package store_test

import (
	"context"
	"errors"
	"strings"
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

// A tenant's leased nodes are those with a lease not yet ended; ending its
// leases leaves none, and leaves other tenants' alone.
func TestLeasedNodesAndEndTenantLeases(t *testing.T) {
	s, _ := inventoryStore(t)
	ctx := context.Background()
	seed(t, s,
		span{node: "n1", tenant: "t1", start: now, end: hours(2)},
		span{node: "n2", tenant: "t1", start: hours(5), end: hours(6)},
		span{node: "n2", tenant: "t2", start: hours(1), end: hours(3)},
		span{node: "n1", tenant: "t2", start: hours(3), end: hours(4), cancel: true},
	)
	names := func(tenant string, at time.Time) string {
		ns, err := s.LeasedNodes(ctx, tenant, at)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return strings.Join(out, ",")
	}
	if got := names("t1", now); got != "n1,n2" {
		t.Errorf("t1's nodes now: %q", got)
	}
	if got := names("t2", now); got != "n2" {
		t.Errorf("t2's nodes now (its cancelled lease does not count): %q", got)
	}
	if got := names("t1", hours(7)); got != "" {
		t.Errorf("t1's nodes after its leases: %q", got)
	}
	n, err := s.EndTenantLeases(ctx, "t1", now.Add(time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("EndTenantLeases = %d, %v; want 2", n, err)
	}
	if got := names("t1", now.Add(time.Minute)); got != "" {
		t.Errorf("t1's nodes after ending its leases: %q", got)
	}
	if got := names("t2", now.Add(time.Minute)); got != "n2" {
		t.Errorf("t2's nodes after t1's end: %q", got)
	}
}
