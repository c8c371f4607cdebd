package tenants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/tenants/docker"
	"github.com/malleable-cloud/malleable/tenants/foremanrun"
)

// Container roles of a tenant.
const (
	roleProxy   = "smart-proxy"
	roleForeman = "foreman"
)

// proxyUID is the smart-proxy image's user (nobody).
const proxyUID = 65534

// DockerOptions configure the Docker runtime of tenants.
type DockerOptions struct {
	// Host is the engine's address; the environment's when empty.
	Host string
	// ForemanImage and PostgresImage run tenants' Foremans and their
	// shared database server.
	ForemanImage, PostgresImage string
	// SeedAdminPassword is what every fresh tenant Foreman is seeded with
	// before onboarding sets the tenant's own; keep it stable (secrets).
	SeedAdminPassword string
	// ProxyBinary is the static malleable executable the smart-proxy
	// image is built around.
	ProxyBinary string
	// Cold runs each Foreman the official image's way (its own migrate
	// and seed) instead of from the template database.
	Cold   bool
	Logger *slog.Logger
}

// Docker runs tenants on a Docker engine: tenants/docker for networks and
// the smart-proxy, tenants/foremanrun for Foreman and its database.
type Docker struct {
	rt      *docker.Runtime
	foreman *foremanrun.Runner
	opts    DockerOptions
	log     *slog.Logger

	imageMu  sync.Mutex
	imageTag string
}

// NewDocker connects to the engine.
func NewDocker(ctx context.Context, o DockerOptions) (*Docker, error) {
	log := logOrDiscard(o.Logger)
	rt, err := docker.New(ctx, docker.Options{Host: o.Host, Logger: log})
	if err != nil {
		return nil, err
	}
	fr, err := foremanrun.New(rt, foremanrun.Options{ForemanImage: o.ForemanImage, PostgresImage: o.PostgresImage,
		SeedAdminPassword: o.SeedAdminPassword, Logger: log})
	if err != nil {
		rt.Close()
		return nil, err
	}
	return &Docker{rt: rt, foreman: fr, opts: o, log: log}, nil
}

// Close releases the engine's client.
func (d *Docker) Close() error { return d.rt.Close() }

// EnsureNetwork returns the tenant's internal network.
func (d *Docker) EnsureNetwork(ctx context.Context, tenant string) (Network, error) {
	n, err := d.rt.EnsureNetwork(ctx, tenant)
	if err != nil {
		return Network{}, err
	}
	return Network{ID: n.ID, Gateway: n.Gateway}, nil
}

// EnsureDatabase makes the tenant's role and database.
func (d *Docker) EnsureDatabase(ctx context.Context, tenant, password string) error {
	return d.foreman.EnsureDatabase(ctx, tenant, password)
}

// EnsureForeman runs the tenant's Foreman and waits for its ping.
func (d *Docker) EnsureForeman(ctx context.Context, s ForemanSpec) (Foreman, error) {
	f, err := d.foreman.EnsureForeman(ctx, foremanrun.ForemanSpec{Tenant: s.Tenant, NetworkID: s.NetworkID,
		DBPassword: s.DBPassword, EncryptionKey: s.EncryptionKey, FQDN: s.FQDN, HostPort: s.HostPort,
		ClientCert: s.ClientCert, ClientKey: s.ClientKey, ProxyCA: s.ProxyCA, Cold: d.opts.Cold})
	if err != nil {
		return Foreman{}, err
	}
	return Foreman{URL: f.URL, PublicURL: f.URL, SeedUser: f.AdminUser, SeedPassword: f.AdminPassword}, nil
}

// proxyImage builds the smart-proxy image once per process and binary.
func (d *Docker) proxyImage(ctx context.Context) (string, error) {
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	if d.imageTag != "" {
		return d.imageTag, nil
	}
	if d.opts.ProxyBinary == "" {
		return "", errors.New("no smart-proxy binary to build its image from")
	}
	tag, _, err := d.rt.ProxyImage(ctx, d.opts.ProxyBinary)
	if err != nil {
		return "", err
	}
	d.imageTag = tag
	return tag, nil
}

// EnsureProxy runs the tenant's smart-proxy: read-only root, no
// capabilities, no new privileges, bounded memory and processes, its files
// readable by its user only.
func (d *Docker) EnsureProxy(ctx context.Context, s ProxySpec) error {
	tag, err := d.proxyImage(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(s.Files))
	for name := range s.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	var files []docker.File
	for _, name := range names {
		files = append(files, docker.File{Path: path.Join(ProxyDir, name), Content: s.Files[name], Mode: 0o400, UID: proxyUID, GID: proxyUID})
	}
	_, action, err := d.rt.Ensure(ctx, docker.ContainerSpec{
		Tenant: s.Tenant, Role: roleProxy, Name: d.rt.Owner() + "-" + s.Tenant + "-" + roleProxy, Image: tag,
		Files: files, User: fmt.Sprintf("%d:%d", proxyUID, proxyUID), ReadOnlyRootfs: true,
		CapDrop: []string{"ALL"}, NoNewPrivileges: true, MemoryBytes: 64 << 20, PidsLimit: 128, Restart: "unless-stopped",
		Networks: []docker.Attachment{{NetworkID: s.NetworkID, Aliases: []string{s.Alias}}},
	})
	if err != nil {
		return err
	}
	d.log.Info("tenant smart-proxy", "tenant", s.Tenant, "action", action)
	return nil
}

// healthPoll is how often WaitHealthy runs the proxy's health check.
const healthPoll = 500 * time.Millisecond

// WaitHealthy runs the tenant's smart-proxy's own health check in it
// (`malleable smart-proxy health`: its listener, certificates and the
// broker with its token) until it passes. The image's HEALTHCHECK runs
// the same every 10 s for as long as the proxy runs; waiting for Docker's
// first run of it would add up to 10 s to every onboarding (Docker's
// start interval needs API 1.44, and engines here speak 1.41). Its Foreman
// answered /api/v2/ping in the foreman step already.
func (d *Docker) WaitHealthy(ctx context.Context, tenant string) error {
	cs, err := d.rt.List(ctx, tenant)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Role != roleProxy {
			continue
		}
		for {
			_, errOut, code, err := d.rt.Exec(ctx, c.ID, []string{"/malleable", "smart-proxy", "health"})
			if err == nil && code == 0 {
				break
			}
			select {
			case <-ctx.Done():
				if err == nil {
					err = fmt.Errorf("health check exit %d: %s", code, strings.TrimSpace(errOut))
				}
				return fmt.Errorf("%s is not healthy: %w", c.Name, err)
			case <-time.After(healthPoll):
			}
		}
	}
	return nil
}

// removeRole removes the tenant's containers of a role.
func (d *Docker) removeRole(ctx context.Context, tenant, role string) error {
	cs, err := d.rt.List(ctx, tenant)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		if c.Role == role {
			errs = append(errs, d.rt.Remove(ctx, c.ID))
		}
	}
	return errors.Join(errs...)
}

// RemoveProxy removes the tenant's smart-proxy.
func (d *Docker) RemoveProxy(ctx context.Context, tenant string) error {
	return d.removeRole(ctx, tenant, roleProxy)
}

// RemoveForeman removes the tenant's Foreman.
func (d *Docker) RemoveForeman(ctx context.Context, tenant string) error {
	return d.removeRole(ctx, tenant, roleForeman)
}

// DropDatabase drops the tenant's database and role.
func (d *Docker) DropDatabase(ctx context.Context, tenant string) error {
	return d.foreman.DropDatabase(ctx, tenant)
}

// RemoveNetwork removes everything left labelled for the tenant, its
// network included.
func (d *Docker) RemoveNetwork(ctx context.Context, tenant string) error {
	return d.rt.RemoveTenant(ctx, tenant)
}

// Containers lists the tenant's containers ("" for every tenant's).
func (d *Docker) Containers(ctx context.Context, tenant string) ([]docker.Container, error) {
	return d.rt.List(ctx, tenant)
}

// LabelledTenants are the tenants that have containers of ours.
func (d *Docker) LabelledTenants(ctx context.Context) ([]string, error) {
	cs, err := d.rt.List(ctx, "")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, c := range cs {
		if c.Tenant != "" && !seen[c.Tenant] {
			seen[c.Tenant] = true
			out = append(out, c.Tenant)
		}
	}
	sort.Strings(out)
	return out, nil
}

// RemoveTenant removes everything labelled for the tenant.
func (d *Docker) RemoveTenant(ctx context.Context, tenant string) error {
	return d.rt.RemoveTenant(ctx, tenant)
}
