package tenants

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
)

// DriftStore lists what drift compares the running tenants with.
type DriftStore interface {
	ListTenants(ctx context.Context) ([]inventory.Tenant, error)
	ListNodes(ctx context.Context) ([]inventory.Node, error)
}

// Orphans finds and removes containers labelled for tenants.
type Orphans interface {
	// LabelledTenants are the tenants that have containers or networks.
	LabelledTenants(ctx context.Context) ([]string, error)
	// RemoveTenant removes everything labelled for the tenant.
	RemoveTenant(ctx context.Context, tenant string) error
}

// Drift keeps running tenants as onboarding left them, one tenant at a
// time so that a changed spec (a new smart-proxy binary) rolls out tenant
// by tenant: a dead or removed container is restored, a container whose
// spec changed is replaced, a running one is adopted untouched (a
// restarted appliance restarts nothing), the hosts of each Foreman follow
// its tenant's leases, and containers labelled for a tenant that is not
// onboarded are removed once they have been seen for Grace.
type Drift struct {
	Plan    *Plan
	Store   DriftStore
	Orphans Orphans
	// Busy reports whether a job of the tenant is running (drift leaves
	// it alone then).
	Busy func(ctx context.Context, tenant string) bool
	// Grace is how long an orphan is left before it is removed.
	Grace time.Duration
	// Locks are the jobs' (Jobs.Locks): a tenant a job works on is
	// skipped.
	Locks *TenantLocks
	// TenantTimeout bounds the work on one tenant; 5 minutes when zero.
	TenantTimeout time.Duration

	mu   sync.Mutex
	seen map[string]time.Time // orphan tenant -> first seen
}

// Pass checks every tenant once and returns what it could not fix.
func (d *Drift) Pass(ctx context.Context) error {
	ts, err := d.Store.ListTenants(ctx)
	if err != nil {
		return err
	}
	var errs []error
	onboarded := map[string]bool{}
	for _, t := range ts {
		if t.State == inventory.TenantRegistered {
			continue
		}
		// A failed job's tenant keeps its containers: the admin runs the
		// job again, or offboards it.
		onboarded[t.Name] = true
		if t.State != inventory.TenantReady || (d.Busy != nil && d.Busy(ctx, t.Name)) {
			continue
		}
		if err := d.locked(ctx, t.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Name, err))
		}
	}
	errs = append(errs, d.orphans(ctx, onboarded))
	return errors.Join(errs...)
}

// locked runs tenant under its lock, within TenantTimeout; a tenant a job
// holds is left alone.
func (d *Drift) locked(ctx context.Context, tenant string) error {
	if d.Locks != nil {
		lock := d.Locks.of(tenant)
		if !lock.TryLock() {
			return nil
		}
		defer lock.Unlock()
	}
	limit := d.TenantTimeout
	if limit == 0 {
		limit = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return d.tenant(ctx, tenant)
}

// tenant re-runs the idempotent onboarding steps that keep its containers
// (not the health wait or Foreman's bootstrap), then its hosts.
func (d *Drift) tenant(ctx context.Context, tenant string) error {
	o := &onboarding{Plan: d.Plan, tenant: tenant, log: d.Plan.Log.With("tenant", tenant), drift: true}
	for _, s := range o.steps() {
		if s.Name == "health" || s.Name == "bootstrap" {
			continue
		}
		if _, err := s.Run(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return o.syncHosts(ctx, d.Store)
}

// syncHosts makes a host for each node the tenant leases and removes the
// hosts of nodes it no longer has a lease of.
func (o *onboarding) syncHosts(ctx context.Context, st DriftStore) error {
	fc, err := o.Foreman(o.foreman.URL, adminUser, string(o.sec[secretAdminPassword]))
	if err != nil {
		return err
	}
	leased, err := o.Store.LeasedNodes(ctx, o.tenant, o.now())
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	var errs []error
	for _, n := range leased {
		keep[n.Name] = true
		h, err := o.host(n)
		if err == nil {
			err = fc.EnsureHost(ctx, h, bmcSubnetName, o.tenant, TenantLocation)
		}
		errs = append(errs, err)
	}
	all, err := st.ListNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range all {
		if !keep[n.Name] {
			errs = append(errs, fc.RemoveHost(ctx, n.Name))
		}
	}
	return errors.Join(errs...)
}

// orphans removes what is labelled for tenants that are not onboarded,
// after Grace.
func (d *Drift) orphans(ctx context.Context, onboarded map[string]bool) error {
	if d.Orphans == nil {
		return nil
	}
	names, err := d.Orphans.LabelledTenants(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string]time.Time{}
	}
	now := d.Plan.now()
	var errs []error
	current := map[string]bool{}
	for _, name := range names {
		if onboarded[name] {
			continue
		}
		current[name] = true
		first, ok := d.seen[name]
		if !ok {
			d.seen[name] = now
			d.Plan.Log.Warn("containers of a tenant that is not onboarded; removed after the grace period", "tenant", name, "grace", d.Grace)
			continue
		}
		if now.Sub(first) < d.Grace {
			continue
		}
		d.Plan.Log.Warn("removing an orphaned tenant's containers", "tenant", name)
		if err := d.Orphans.RemoveTenant(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(d.seen, name)
	}
	for name := range d.seen {
		if !current[name] {
			delete(d.seen, name)
		}
	}
	return errors.Join(errs...)
}

// Run runs a pass every interval until ctx ends.
func (d *Drift) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := d.Pass(ctx); err != nil && ctx.Err() == nil {
			d.Plan.Log.Warn("tenant drift", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
