package appliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/malleable-cloud/malleable/appliance/pki"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/secrets/vault"
	"github.com/malleable-cloud/malleable/appliance/store"
	"github.com/malleable-cloud/malleable/tenants"
)

// seedPasswordPath keeps the admin password every tenant Foreman is seeded
// with until its onboarding sets the tenant's own: stable, because the
// template database outlives the process.
const seedPasswordPath = "appliance/foreman-seed-password"

// openSecrets returns the secret store and certificate authority the
// configuration asks for: Vault's with [vault] address, else the embedded
// file store and an embedded CA kept in it. closeFn stops Vault's renewal.
func openSecrets(ctx context.Context, cfg Config, file *secrets.FileStore, now func() time.Time, log *slog.Logger) (secrets.Store, pki.Authority, func(), error) {
	if cfg.Vault.Address == "" {
		return file, pki.NewLocal(file, now), func() {}, nil
	}
	v := cfg.Vault
	c, err := vault.Connect(ctx, vault.Config{Address: v.Address, TokenFile: v.TokenFile, RoleID: v.RoleID,
		SecretIDFile: v.SecretIDFile, KVMount: v.KVMount, Root: v.Root, PKIMount: v.PKIMount, CAFile: v.CAFile,
		Timeout: v.Timeout}, log.With("component", "vault"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("[vault]: %w", err)
	}
	log.Info("secrets and certificates in Vault", "address", v.Address, "kv", v.KVMount+"/"+v.Root, "pki", v.PKIMount)
	// Running tenants keep their power while Vault is out of reach; new
	// work (an onboarding) fails with Vault's error.
	return secrets.NewLastKnown(c.Store(), log.With("component", "secrets")), c.Authority(), func() { c.Close() }, nil
}

// tenantParts are the tenant lifecycle's running parts.
type tenantParts struct {
	service   *tenants.Service
	drift     *tenants.Drift
	listeners *tenantListeners
	runtime   *tenants.Docker
}

// startTenants wires onboarding on the Docker engine ([tenants] runtime =
// docker); nil parts without it.
func startTenants(ctx context.Context, cfg Config, st *store.Store, sec secrets.Store, ca pki.Authority,
	rec *reconcile.Reconciler, disks tenants.DiskRemover, now func() time.Time, log *slog.Logger) (*tenantParts, error) {
	if cfg.Tenants.Runtime != "docker" {
		return nil, nil
	}
	seed, err := sec.Get(ctx, seedPasswordPath)
	if errors.Is(err, secrets.ErrNotFound) {
		b := make([]byte, 16)
		rand.Read(b)
		seed = []byte(hex.EncodeToString(b))
		err = sec.Put(ctx, seedPasswordPath, seed)
	}
	if err != nil {
		return nil, fmt.Errorf("the seed password of tenants' Foremans: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable for the smart-proxy image: %w", err)
	}
	log = log.With("component", "tenants")
	rt, err := tenants.NewDocker(ctx, tenants.DockerOptions{Host: cfg.Tenants.DockerHost, ForemanImage: cfg.Tenants.ForemanImage,
		PostgresImage: cfg.Tenants.PostgresImage, SeedAdminPassword: string(seed), ProxyBinary: self, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("[tenants] runtime = docker: %w", err)
	}
	tl := newTenantListeners(st, nil, cfg.Tenants.BrokerPort, log)
	plan := &tenants.Plan{Store: st, Runtime: rt, Secrets: sec, CA: ca,
		Foreman: tenants.ForemanClient(30*time.Second, log), Broker: tl, TokenHash: store.TokenHash,
		Leases: leaseEnder{st: st, rec: rec}, BMCRange: cfg.Nodes.TenantBMCPrefix(), Domain: cfg.Tenants.Domain,
		Log: log, Now: now}
	if disks != nil {
		plan.Disks = disks
	}
	locks := &tenants.TenantLocks{}
	jobs := &tenants.Jobs{Store: st, Planner: plan, Log: log, Now: now, StepTimeout: cfg.Tenants.StepTimeout, Locks: locks}
	drift := &tenants.Drift{Plan: plan, Store: st, Orphans: rt, Grace: cfg.Tenants.OrphanGrace, Locks: locks,
		Busy: func(ctx context.Context, tenant string) bool {
			running, err := st.RunningTenantJobs(ctx)
			for _, j := range running {
				if j.Tenant == tenant {
					return true
				}
			}
			return err != nil
		}}
	rec.Machine.Hosts = plan
	return &tenantParts{service: &tenants.Service{Jobs: jobs, Plan: plan}, drift: drift, listeners: tl, runtime: rt}, nil
}

// leaseEnder ends a tenant's leases and runs a reconcile pass, so its
// nodes are handed over before its containers go.
type leaseEnder struct {
	st  *store.Store
	rec *reconcile.Reconciler
}

// EndTenantLeases ends the tenant's leases, then runs passes until it
// holds no node (a handover may need several: power-off retries), so
// that its disks are never deleted under a running node.
func (l leaseEnder) EndTenantLeases(ctx context.Context, tenant string, now time.Time) (int, error) {
	n, err := l.st.EndTenantLeases(ctx, tenant, now)
	if err != nil {
		return n, err
	}
	for {
		if _, err := l.rec.PassAs(ctx, pass.TriggerAPI, "offboarding of "+tenant); err != nil {
			return n, fmt.Errorf("hand %s's nodes over: %w", tenant, err)
		}
		held, err := l.st.LeasedNodes(ctx, tenant, time.Now())
		if err != nil || len(held) == 0 {
			return n, err
		}
		select {
		case <-ctx.Done():
			return n, fmt.Errorf("%s still holds %d nodes: %w", tenant, len(held), ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}
