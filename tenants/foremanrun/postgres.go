package foremanrun

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/tenants/docker"
)

// Names inside the shared PostgreSQL server.
const (
	pgNetwork     = "postgres" // shared network name and the server's alias everywhere
	pgAlias       = "postgres"
	templateRole  = "foreman_template"
	markTemplate  = "malleable template ready"
	markTenant    = "malleable tenant ready"
	scramIter     = 4096
	pgStartWait   = 3 * time.Minute
	uuidSQLRegexp = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
)

// ensurePostgres runs the appliance's one PostgreSQL server on its own
// internal network, data in a named volume that survives replacement.
// The superuser's password is random and never leaves the container: we
// reach the server as superuser only through `psql` over its local socket.
func (r *Runner) ensurePostgres(ctx context.Context) (docker.Container, error) {
	net, err := r.rt.EnsureSharedNetwork(ctx, pgNetwork)
	if err != nil {
		return docker.Container{}, err
	}
	owner := r.rt.Owner()
	spec := docker.ContainerSpec{
		Role: "postgres", Name: owner + "-postgres", Image: r.opts.PostgresImage,
		Entrypoint: []string{"/bin/sh", "-c",
			`POSTGRES_PASSWORD="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" exec docker-entrypoint.sh "$@"`, "postgres-wrapper"},
		Cmd:    []string{"postgres", "-c", "max_connections=300"},
		Mounts: []docker.Mount{{Source: owner + "-postgres-data", Target: "/var/lib/postgresql/data"}},
		// Root only to prepare the data directory, then setpriv to postgres.
		CapDrop: []string{"ALL"}, CapAdd: []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"},
		NoNewPrivileges: true, MemoryBytes: r.opts.PostgresMemory, PidsLimit: 1024, Restart: "unless-stopped",
		Health: &docker.Health{
			Cmd:      []string{"pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"},
			Interval: time.Second, Timeout: 5 * time.Second, StartPeriod: 2 * time.Minute, Retries: 30,
		},
		Networks: []docker.Attachment{{NetworkID: net.ID, Aliases: []string{pgAlias}}},
	}
	c, _, err := r.rt.Ensure(ctx, spec)
	if err != nil {
		return docker.Container{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, pgStartWait)
	defer cancel()
	if c, err = r.rt.WaitHealthy(wctx, c.ID); err != nil {
		return c, fmt.Errorf("shared postgresql: %w", err)
	}
	// Nobody but the superuser connects to the maintenance databases.
	if _, err := r.psql(ctx, c, "postgres", "REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC"); err != nil {
		return c, err
	}
	return c, nil
}

// psql runs statements as the superuser over the local socket, each in
// its own transaction (one -c each), and returns the unaligned output.
// Statements are built only from validated names and SCRAM verifiers.
func (r *Runner) psql(ctx context.Context, pg docker.Container, db string, stmts ...string) (string, error) {
	cmd := []string{"psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db}
	for _, s := range stmts {
		cmd = append(cmd, "-c", s)
	}
	out, errOut, code, err := r.rt.ExecAs(ctx, pg.ID, "postgres", cmd)
	if err != nil {
		return "", fmt.Errorf("psql on %s: %w", db, err)
	}
	if code != 0 {
		return "", fmt.Errorf("psql on %s: exit %d: %s", db, code, strings.TrimSpace(errOut))
	}
	return strings.TrimSpace(out), nil
}

// dbMark reads a database's comment: "" when it does not exist, "-" when
// it exists without a comment (a creation that did not finish).
func (r *Runner) dbMark(ctx context.Context, pg docker.Container, db string) (string, error) {
	return r.psql(ctx, pg, "postgres",
		fmt.Sprintf("SELECT coalesce(shobj_description(oid, 'pg_database'), '-') FROM pg_database WHERE datname = '%s'", db))
}

// ensureRole creates the login role or resets its password. Only the
// SCRAM verifier crosses into the server: the password itself never
// appears in an exec's arguments or a log.
func (r *Runner) ensureRole(ctx context.Context, pg docker.Container, role, password string) error {
	_, err := r.psql(ctx, pg, "postgres",
		fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s; END IF; END$$`, role, role),
		fmt.Sprintf("ALTER ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '%s'", role, scramVerifier(password)))
	return err
}

// EnsureDatabase gives the tenant its role (password given by the caller,
// from secrets) and its database, cloned from the Foreman image's template
// (built first if missing). An existing finished database is kept as is.
func (r *Runner) EnsureDatabase(ctx context.Context, tenant, password string) error {
	_, err := r.ensureDatabase(ctx, tenant, password, true)
	return err
}

func (r *Runner) ensureDatabase(ctx context.Context, tenant, password string, fromTemplate bool) (docker.Container, error) {
	if err := checkTenant(tenant); err != nil {
		return docker.Container{}, err
	}
	if err := checkPassword("database password", password); err != nil {
		return docker.Container{}, err
	}
	pg, err := r.ensurePostgres(ctx)
	if err != nil {
		return pg, err
	}
	var tmpl string
	if fromTemplate {
		if tmpl, err = r.ensureTemplate(ctx, pg); err != nil {
			return pg, err
		}
	}
	r.pgMu.Lock()
	defer r.pgMu.Unlock()
	db := dbName(tenant)
	if err := r.ensureRole(ctx, pg, db, password); err != nil {
		return pg, err
	}
	mark, err := r.dbMark(ctx, pg, db)
	if err != nil {
		return pg, err
	}
	if mark == markTenant {
		return pg, nil
	}
	if mark != "" {
		r.log.Warn("dropping an unfinished tenant database", "tenant", tenant, "database", db)
		if _, err := r.psql(ctx, pg, "postgres", "DROP DATABASE "+db+" WITH (FORCE)"); err != nil {
			return pg, err
		}
	}
	start := time.Now()
	if fromTemplate {
		if _, err := r.psql(ctx, pg, "postgres", fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s OWNER %s", db, tmpl, db)); err != nil {
			return pg, err
		}
		// Tables made by the template's migrations change hands; the
		// copied sessions (a copied cookie would work on every clone) go;
		// each clone gets its own instance_id.
		if _, err := r.psql(ctx, pg, db,
			fmt.Sprintf("REASSIGN OWNED BY %s TO %s", templateRole, db),
			"DROP OWNED BY "+templateRole,
			"TRUNCATE sessions",
			fmt.Sprintf("UPDATE settings SET value = regexp_replace(value, '%s', '%s') WHERE name = 'instance_id'", uuidSQLRegexp, newUUID()),
		); err != nil {
			return pg, err
		}
	} else if _, err := r.psql(ctx, pg, "postgres", fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, db)); err != nil {
		return pg, err
	}
	if _, err := r.psql(ctx, pg, "postgres",
		fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", db),
		fmt.Sprintf("GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s", db, db),
		fmt.Sprintf("COMMENT ON DATABASE %s IS '%s'", db, markTenant),
	); err != nil {
		return pg, err
	}
	r.log.Info("tenant database created", "tenant", tenant, "database", db, "from_template", tmpl, "took", time.Since(start).Round(time.Millisecond))
	return pg, nil
}

// DropDatabase removes the tenant's database (closing its connections)
// and role. Idempotent.
func (r *Runner) DropDatabase(ctx context.Context, tenant string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	pg, err := r.ensurePostgres(ctx)
	if err != nil {
		return err
	}
	r.pgMu.Lock()
	defer r.pgMu.Unlock()
	db := dbName(tenant)
	_, err = r.psql(ctx, pg, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)", "DROP ROLE IF EXISTS "+db)
	return err
}

// templateName is one template per Foreman image and seed password: new
// migrations are not run by the server-only command, so a new image needs
// a new template; and a Foreman cloned from a template accepts only the
// admin password it was seeded with, so an appliance with another seed
// password (another secret store on the same engine) needs its own. The
// name holds a hash of the password, never the password.
func templateName(imageID, seedPassword string) string {
	id := strings.TrimPrefix(imageID, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	sum := sha256.Sum256([]byte("malleable foreman seed " + seedPassword))
	return "foreman_template_" + id + "_" + hex.EncodeToString(sum[:4])
}

// dbURL is Foreman's DATABASE_URL for a role on the shared server.
func dbURL(role, password, db string) string {
	u := url.URL{Scheme: "postgresql", User: url.UserPassword(role, password), Host: pgAlias + ":5432", Path: "/" + db,
		RawQuery: "pool=9&sslmode=disable"}
	return u.String()
}

// scramVerifier is PostgreSQL's stored form of a SCRAM-SHA-256 password
// (RFC 5802/7677): what CREATE ROLE accepts in place of the password.
func scramVerifier(password string) string {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	salted, _ := pbkdf2.Key(sha256.New, password, salt, scramIter, sha256.Size) // cannot fail with these sizes
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIter, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key")))
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomPassword() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
