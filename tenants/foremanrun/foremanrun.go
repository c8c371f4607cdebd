// Package foremanrun runs tenants' Foreman instances on the container
// runtime: one shared PostgreSQL server for the appliance with one database
// and role per tenant, each tenant database cloned from a template that
// was migrated and seeded once per Foreman image, and each tenant's
// Foreman running the server only.
package foremanrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/tenants/docker"
)

// Defaults of Options.
const (
	DefaultForemanImage  = "local/foreman:3.12"
	DefaultPostgresImage = "local/postgres:15"
	DefaultAdminUser     = "admin"
	DefaultOrganization  = "Default Organization"
	DefaultLocation      = "Default Location"
)

// Sentinel errors callers branch on.
var (
	// ErrInvalid reports a tenant name, password or spec refused before anything changed.
	ErrInvalid = errors.New("invalid")
	// ErrTemplate reports that migrating and seeding the template failed.
	ErrTemplate = errors.New("foreman template database")
	// ErrNotReady reports a Foreman that did not answer /api/v2/ping in time.
	ErrNotReady = errors.New("foreman not ready")
)

var tenantRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// Runtime is what foremanrun needs of the container runtime
// (*docker.Runtime).
type Runtime interface {
	Owner() string
	EnsureSharedNetwork(ctx context.Context, name string) (docker.Network, error)
	Ensure(ctx context.Context, spec docker.ContainerSpec) (docker.Container, docker.Action, error)
	Connect(ctx context.Context, containerID, networkID string, aliases ...string) error
	Inspect(ctx context.Context, idOrName string) (docker.Container, error)
	WaitHealthy(ctx context.Context, id string) (docker.Container, error)
	WaitExit(ctx context.Context, id string) (int, error)
	Logs(ctx context.Context, id string, tail int) (string, error)
	Exec(ctx context.Context, id string, cmd []string) (stdout, stderr string, exit int, err error)
	ExecAs(ctx context.Context, id, user string, cmd []string) (stdout, stderr string, exit int, err error)
	ImageID(ctx context.Context, ref string) (string, error)
	Remove(ctx context.Context, id string) error
}

var _ Runtime = (*docker.Runtime)(nil)

// Options configure a Runner.
type Options struct {
	ForemanImage  string // default DefaultForemanImage
	PostgresImage string // default DefaultPostgresImage
	// SeedAdminPassword is the admin password every template (and so every
	// fresh tenant Foreman) is seeded with; the onboarding changes it per
	// tenant through the API. It must be stable (keep it in secrets):
	// templates outlive the process. Required, 12 to 128 printable ASCII.
	SeedAdminPassword string
	SeedAdminUser     string // default DefaultAdminUser
	ForemanMemory     int64  // bytes per Foreman container; default 1.5 GiB
	PostgresMemory    int64  // bytes for the shared server; default 1 GiB
	// TemplateTimeout bounds one migrate+seed run; default 15 minutes.
	TemplateTimeout time.Duration
	// StartTimeout bounds the wait for a Foreman's /api/v2/ping; default 15 minutes
	// (a cold start took over 5 minutes on 2 cores under load).
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// Runner runs tenants' Foremans and their databases. Safe for concurrent use.
type Runner struct {
	rt   Runtime
	opts Options
	log  *slog.Logger
	// tmplMu serialises template builds (one per image) in this process.
	tmplMu sync.Mutex
	// pgMu serialises DDL on one tenant's role and database.
	pgMu sync.Mutex
}

// New checks the options; it touches nothing yet.
func New(rt Runtime, o Options) (*Runner, error) {
	if o.ForemanImage == "" {
		o.ForemanImage = DefaultForemanImage
	}
	if o.PostgresImage == "" {
		o.PostgresImage = DefaultPostgresImage
	}
	if o.SeedAdminUser == "" {
		o.SeedAdminUser = DefaultAdminUser
	}
	if err := checkPassword("seed admin password", o.SeedAdminPassword); err != nil {
		return nil, err
	}
	if !regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`).MatchString(o.SeedAdminUser) {
		return nil, fmt.Errorf("seed admin user %q: %w", o.SeedAdminUser, ErrInvalid)
	}
	if o.ForemanMemory == 0 {
		o.ForemanMemory = 1536 << 20
	}
	if o.PostgresMemory == 0 {
		o.PostgresMemory = 1 << 30
	}
	if o.TemplateTimeout == 0 {
		o.TemplateTimeout = 15 * time.Minute
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 15 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Runner{rt: rt, opts: o, log: o.Logger.With("component", "foremanrun")}, nil
}

// SeedAdmin returns the credentials a fresh tenant Foreman accepts until
// the onboarding changes them.
func (r *Runner) SeedAdmin() (user, password string) {
	return r.opts.SeedAdminUser, r.opts.SeedAdminPassword
}

func checkTenant(tenant string) error {
	if !tenantRE.MatchString(tenant) {
		return fmt.Errorf("tenant %q: %w (want [a-z][a-z0-9-]{0,30})", tenant, ErrInvalid)
	}
	return nil
}

// checkPassword keeps passwords to printable ASCII so that they pass
// through URLs and files unchanged.
func checkPassword(what, pw string) error {
	if len(pw) < 12 || len(pw) > 128 {
		return fmt.Errorf("%s: %w (want 12 to 128 characters)", what, ErrInvalid)
	}
	for _, c := range pw {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("%s: %w (printable ASCII without spaces only)", what, ErrInvalid)
		}
	}
	return nil
}

// dbName is the tenant's database and role: t_<tenant> with '-' as '_'
// (tenant names have no '_', so the mapping is one to one).
func dbName(tenant string) string {
	return "t_" + strings.ReplaceAll(tenant, "-", "_")
}
