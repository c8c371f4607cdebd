package tenants

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// Service is the tenant lifecycle as the admin API and the web UI call it.
type Service struct {
	Jobs *Jobs
	Plan *Plan

	shown sync.Mutex // makes Credentials' show-once check and mark one step
}

// ErrShown means a tenant's Foreman login was already shown once.
var ErrShown = errors.New("the Foreman login was already shown")

// ErrNotOnboarded means the tenant has no Foreman of the appliance's yet.
var ErrNotOnboarded = errors.New("the tenant has no Foreman onboarded")

// Onboard starts, or finds running, the tenant's onboarding. Run again
// after a failure, it finishes what the last run left.
func (s *Service) Onboard(ctx context.Context, tenant string) (inventory.TenantJob, error) {
	if s.Plan.Runtime == nil {
		return inventory.TenantJob{}, errNoRuntime
	}
	return s.Jobs.Start(ctx, tenant, inventory.JobOnboard, struct{}{})
}

// Offboard starts, or finds running, the tenant's offboarding.
func (s *Service) Offboard(ctx context.Context, tenant string, opts inventory.OffboardOptions) (inventory.TenantJob, error) {
	if s.Plan.Runtime == nil {
		return inventory.TenantJob{}, errNoRuntime
	}
	return s.Jobs.Start(ctx, tenant, inventory.JobOffboard, opts)
}

// Credentials returns the tenant's Foreman login, once: a second call is
// ErrShown, so the password has been seen by whoever took it first.
func (s *Service) Credentials(ctx context.Context, tenant string) (inventory.ForemanLogin, error) {
	t, err := s.Plan.Store.GetTenant(ctx, tenant)
	if err != nil {
		return inventory.ForemanLogin{}, err
	}
	pw, err := s.Plan.Secrets.Get(ctx, SecretPath(tenant, secretAdminPassword))
	if errors.Is(err, secrets.ErrNotFound) {
		return inventory.ForemanLogin{}, fmt.Errorf("%s: %w", tenant, ErrNotOnboarded)
	}
	if err != nil {
		return inventory.ForemanLogin{}, err
	}
	s.shown.Lock()
	defer s.shown.Unlock()
	shown := SecretPath(tenant, secretLoginShown)
	if _, err := s.Plan.Secrets.Get(ctx, shown); err == nil {
		return inventory.ForemanLogin{}, fmt.Errorf("%s: %w", tenant, ErrShown)
	} else if !errors.Is(err, secrets.ErrNotFound) {
		return inventory.ForemanLogin{}, err
	}
	if err := s.Plan.Secrets.Put(ctx, shown, []byte("1")); err != nil {
		return inventory.ForemanLogin{}, err
	}
	return inventory.ForemanLogin{Tenant: tenant, URL: t.ForemanURL, Username: adminUser, Password: string(pw)}, nil
}
