package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/malleable-cloud/malleable/appliance/inventory"
)

// The steps of each kind of job, in order.
var (
	OnboardSteps  = []string{"network", "secrets", "certificates", "database", "foreman", "smart-proxy", "health", "bootstrap"}
	OffboardSteps = []string{"leases", "smart-proxy", "foreman", "database", "network", "certificates", "disks", "secrets"}
)

// Network is a tenant's private network as the runtime made it.
type Network struct {
	ID string
	// Gateway is the appliance's address on it: where the tenant's
	// smart-proxy reaches the broker.
	Gateway string
}

// ForemanSpec is what the runtime runs a tenant's Foreman from.
type ForemanSpec struct {
	Tenant, NetworkID string
	DBPassword        string
	EncryptionKey     string
	// FQDN is the name the smart-proxy knows Foreman by.
	FQDN string
	// HostPort is where Foreman answers on the appliance's loopback,
	// the same for the tenant's whole life.
	HostPort int
	// ClientCert and ClientKey are the certificate Foreman presents to
	// its smart-proxy; ProxyCA the CA it trusts the proxy's by.
	ClientCert, ClientKey, ProxyCA []byte
}

// Foreman is where a tenant's Foreman answers.
type Foreman struct {
	// URL is where the appliance calls its API.
	URL string
	// PublicURL is where the tenant's users reach it.
	PublicURL string
	// SeedUser and SeedPassword are the administrator Foreman was
	// created with, before onboarding sets the tenant's own password.
	SeedUser, SeedPassword string
}

// ProxySpec is what the runtime runs a tenant's smart-proxy from.
type ProxySpec struct {
	Tenant, NetworkID string
	// Alias is the proxy's name on the tenant's network, in its
	// certificate and in the URL Foreman registers.
	Alias string
	// Files are mounted read-only at ProxyDir, readable by the proxy's
	// user only: its configuration, certificates and credentials.
	Files map[string][]byte
}

// ProxyDir is where a tenant's smart-proxy container finds its files;
// its INI is ProxyDir/smart-proxy.ini, where the image looks for it.
const ProxyDir = "/etc/malleable"

// Runtime runs tenants' containers (tenants/docker and tenants/foremanrun
// on a Docker engine). Every method is idempotent.
type Runtime interface {
	EnsureNetwork(ctx context.Context, tenant string) (Network, error)
	EnsureDatabase(ctx context.Context, tenant, password string) error
	EnsureForeman(ctx context.Context, spec ForemanSpec) (Foreman, error)
	EnsureProxy(ctx context.Context, spec ProxySpec) error
	// WaitHealthy waits for the tenant's containers' health checks.
	WaitHealthy(ctx context.Context, tenant string) error
	RemoveProxy(ctx context.Context, tenant string) error
	RemoveForeman(ctx context.Context, tenant string) error
	DropDatabase(ctx context.Context, tenant string) error
	RemoveNetwork(ctx context.Context, tenant string) error
}

// Finished records how a job ended as the tenant's state.
func (p *Plan) Finished(ctx context.Context, tenant string, kind inventory.JobKind, err error) error {
	switch {
	case err != nil:
		return p.Store.SetTenantState(ctx, tenant, inventory.TenantFailed, "")
	case kind == inventory.JobOnboard:
		return p.Store.SetTenantState(ctx, tenant, inventory.TenantReady, "")
	default:
		return p.Store.SetTenantState(ctx, tenant, inventory.TenantRegistered, "")
	}
}

// StepNames are the names of the steps of kind.
func (p *Plan) StepNames(kind inventory.JobKind) []string {
	if kind == inventory.JobOffboard {
		return OffboardSteps
	}
	return OnboardSteps
}

// Steps returns the steps of a job.
func (p *Plan) Steps(tenant string, kind inventory.JobKind, options string) ([]Step, error) {
	if err := inventory.ValidateName("tenant", tenant); err != nil {
		return nil, err
	}
	switch kind {
	case inventory.JobOnboard:
		o := &onboarding{Plan: p, tenant: tenant, log: p.Log.With("tenant", tenant)}
		return o.steps(), nil
	case inventory.JobOffboard:
		var opts inventory.OffboardOptions
		if options != "" && options != "null" {
			if err := json.Unmarshal([]byte(options), &opts); err != nil {
				return nil, fmt.Errorf("offboard options: %w", err)
			}
		}
		o := &offboarding{Plan: p, tenant: tenant, opts: opts}
		return o.steps(), nil
	}
	return nil, fmt.Errorf("no job of kind %q", kind)
}

// errNoRuntime refuses onboarding on an appliance without a container runtime.
var errNoRuntime = errors.New("no container runtime: set [tenants] runtime = docker")

// logOrDiscard returns log, or a logger that drops everything.
func logOrDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
