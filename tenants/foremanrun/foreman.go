package foremanrun

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/tenants/docker"
)

// foremanPort is where the Foreman image serves HTTP.
const foremanPort = 3000

// foremanAlias is the Foreman container's name on its tenant's network.
const foremanAlias = "foreman"

var (
	fqdnRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	hexRE  = regexp.MustCompile(`^[0-9a-fA-F]{32,64}$`)
)

// ForemanSpec is one tenant's Foreman. Secrets come from the caller's
// secret store and reach the container only as 0400 files.
type ForemanSpec struct {
	Tenant        string
	NetworkID     string // the tenant's internal network (docker.Runtime.EnsureNetwork)
	DBPassword    string // the tenant's database role's password
	EncryptionKey string // hex, 32 to 64 digits; must never change for a tenant
	FQDN          string // FOREMAN_FQDN
	// ClientCert, ClientKey (PEM) are what Foreman presents to its
	// smart-proxy; ProxyCA is the CA it trusts for it. Each optional.
	ClientCert, ClientKey, ProxyCA []byte
	// HostPort pins where Foreman answers on 127.0.0.1 (0: a random port),
	// so that its URL outlives its container.
	HostPort int
	// Cold selects the official image's behaviour instead of the
	// template: an empty database, migrate and seed at first start.
	Cold bool
}

// Foreman is a running tenant Foreman.
type Foreman struct {
	Container docker.Container
	// URL is where the host reaches it: http://127.0.0.1:<random port>.
	URL string
	// InternalURL is where its tenant network (the smart-proxy) reaches it.
	InternalURL string
	// AdminUser and AdminPassword are the seed credentials, valid until
	// the onboarding changes them.
	AdminUser, AdminPassword string
	// Ready is how long the last start took to answer ping (0 when it
	// was already running).
	Ready time.Duration
}

func (s ForemanSpec) validate() error {
	bad := func(what string) error { return fmt.Errorf("foreman spec for %s: %s: %w", s.Tenant, what, ErrInvalid) }
	if err := checkTenant(s.Tenant); err != nil {
		return err
	}
	switch {
	case s.NetworkID == "":
		return bad("no network")
	case !hexRE.MatchString(s.EncryptionKey):
		return bad("encryption key must be 32 to 64 hex digits")
	case !fqdnRE.MatchString(s.FQDN):
		return bad("fqdn")
	}
	return checkPassword("database password", s.DBPassword)
}

// EnsureForeman gives the tenant its database (cloned from the template,
// or empty with Cold), connects the shared PostgreSQL to the tenant's
// network as "postgres", runs the tenant's Foreman (server only, or
// migrate+seed+server with Cold) with port 3000 published on 127.0.0.1,
// and waits until /api/v2/ping answers 200. A Foreman already running
// with this spec is left alone.
func (r *Runner) EnsureForeman(ctx context.Context, s ForemanSpec) (Foreman, error) {
	if err := s.validate(); err != nil {
		return Foreman{}, err
	}
	log := r.log.With("tenant", s.Tenant)
	pg, err := r.ensureDatabase(ctx, s.Tenant, s.DBPassword, !s.Cold)
	if err != nil {
		return Foreman{}, err
	}
	if err := r.rt.Connect(ctx, pg.ID, s.NetworkID, pgAlias); err != nil {
		return Foreman{}, err
	}
	db := dbName(s.Tenant)
	var files []docker.File
	for _, f := range []struct {
		name string
		data []byte
	}{{"client_cert.pem", s.ClientCert}, {"client_key.pem", s.ClientKey}, {"proxy_ca.pem", s.ProxyCA}} {
		if len(f.data) > 0 {
			files = append(files, docker.File{Path: "/etc/foreman/" + f.name, Content: f.data, Mode: 0o400, UID: foremanUID})
		}
	}
	env := []string{"FOREMAN_FQDN=" + s.FQDN, "FOREMAN_DB_WAIT=120"}
	cmd := []string{"bin/rails", "server", "-e", "production", "-b", "0.0.0.0", "-p", strconv.Itoa(foremanPort)}
	secretEnv := map[string]string{"DATABASE_URL": dbURL(db, s.DBPassword, db), "ENCRYPTION_KEY": s.EncryptionKey}
	if s.Cold {
		// The image's default command; spelled out, because a container
		// whose entrypoint is overridden loses the image's CMD.
		cmd = []string{"/bin/sh", "-c", "bin/rails db:migrate && bin/rails db:seed && exec " + strings.Join(cmd, " ")}
		env = append(env, "SEED_ADMIN_USER="+r.opts.SeedAdminUser,
			"SEED_ORGANIZATION="+DefaultOrganization, "SEED_LOCATION="+DefaultLocation)
		secretEnv["SEED_ADMIN_PASSWORD"] = r.opts.SeedAdminPassword
	}
	spec := r.foremanSpec(s.Tenant, "foreman", r.rt.Owner()+"-"+s.Tenant+"-foreman",
		[]docker.Attachment{{NetworkID: s.NetworkID, Aliases: []string{foremanAlias}}}, cmd, env, secretEnv, files)
	spec.Restart = "unless-stopped"
	spec.PublishLocal = []int{foremanPort}
	if s.HostPort != 0 {
		spec.HostPorts = map[int]int{foremanPort: s.HostPort}
	}
	// bash's /dev/tcp, not ruby: a health check runs every 30 s in every tenant.
	spec.Health = &docker.Health{
		Cmd:      []string{"bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /api/v2/ping HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3 && head -n1 <&3 | grep -q ' 200 '`},
		Interval: 30 * time.Second, Timeout: 10 * time.Second, StartPeriod: 10 * time.Minute, Retries: 3,
	}
	start := time.Now()
	c, act, err := r.rt.Ensure(ctx, spec)
	if err != nil {
		return Foreman{}, err
	}
	f := Foreman{
		Container: c, URL: fmt.Sprintf("http://127.0.0.1:%d", c.Ports[foremanPort]),
		InternalURL: fmt.Sprintf("http://%s:%d", foremanAlias, foremanPort),
		AdminUser:   r.opts.SeedAdminUser, AdminPassword: r.opts.SeedAdminPassword,
	}
	if c.Ports[foremanPort] == 0 {
		return f, fmt.Errorf("foreman of %s: port %d not published", s.Tenant, foremanPort)
	}
	wctx, cancel := context.WithTimeout(ctx, r.opts.StartTimeout)
	defer cancel()
	if err := r.waitPing(wctx, c.ID, f.URL); err != nil {
		return f, fmt.Errorf("foreman of %s (%s): %w", s.Tenant, act, err)
	}
	if act != docker.Unchanged && act != docker.Adopted {
		f.Ready = time.Since(start)
	}
	log.Info("foreman ready", "action", act, "url", f.URL, "ready_after", f.Ready.Round(100*time.Millisecond), "cold", s.Cold)
	return f, nil
}

// waitPing polls GET /api/v2/ping until 200; a container that exits
// ends the wait early with its last log lines.
func (r *Runner) waitPing(ctx context.Context, id, base string) error {
	hc := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v2/ping", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if i%10 == 9 {
			c, err := r.rt.Inspect(ctx, id)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrNotReady, err)
			}
			if c.State == "exited" || c.State == "dead" || c.Restarts >= 3 {
				logs, _ := r.rt.Logs(context.WithoutCancel(ctx), id, 20)
				return fmt.Errorf("%w: container %s, exit %d, %d restarts:\n%s", ErrNotReady, c.State, c.ExitCode, c.Restarts, logs)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: no ping answer: %w", ErrNotReady, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
