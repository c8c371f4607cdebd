package foremanrun

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/malleable-cloud/malleable/tenants/docker"
)

// foremanUID is the Foreman image's user (uid 1001, gid 0): secret files
// are its, mode 0400.
const foremanUID = 1001

// envDir holds one file per secret environment variable; the wrapper
// entrypoint exports them into the Foreman process only, so they never
// show in `docker inspect`.
const envDir = "/run/malleable/env"

// wrapperEntrypoint exports envDir's files, then runs the image's own
// entrypoint (TLS settings from /etc/foreman/*.pem, the database wait).
var wrapperEntrypoint = []string{"/bin/sh", "-c",
	`for f in ` + envDir + `/*; do [ -f "$f" ] && export "${f##*/}=$(cat "$f")"; done; exec /usr/bin/entrypoint.sh "$@"`,
	"foreman-wrapper"}

// foremanSpec is a Foreman container: hardened, secrets as files.
func (r *Runner) foremanSpec(tenant, role, name string, nets []docker.Attachment, cmd, env []string, secretEnv map[string]string, files []docker.File) docker.ContainerSpec {
	keys := make([]string, 0, len(secretEnv))
	for k := range secretEnv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		files = append(files, docker.File{Path: envDir + "/" + k, Content: []byte(secretEnv[k]), Mode: 0o400, UID: foremanUID})
	}
	return docker.ContainerSpec{
		Tenant: tenant, Role: role, Name: name, Image: r.opts.ForemanImage,
		Entrypoint: wrapperEntrypoint, Cmd: cmd, Env: env, Files: files,
		CapDrop: []string{"ALL"}, NoNewPrivileges: true,
		MemoryBytes: r.opts.ForemanMemory, PidsLimit: 1024,
		Networks: nets,
	}
}

// ensureTemplate returns the template database of the configured Foreman
// image, building it if needed: a one-shot Foreman container migrates and
// seeds it as role foreman_template; then its sessions are truncated, the
// role loses LOGIN, no connection stays open, and a comment marks it done.
func (r *Runner) ensureTemplate(ctx context.Context, pg docker.Container) (string, error) {
	r.tmplMu.Lock()
	defer r.tmplMu.Unlock()
	imageID, err := r.rt.ImageID(ctx, r.opts.ForemanImage)
	if err != nil {
		return "", fmt.Errorf("foreman image: %w", err)
	}
	tmpl := templateName(imageID, r.opts.SeedAdminPassword)
	mark, err := r.dbMark(ctx, pg, tmpl)
	if err != nil || mark == markTemplate {
		return tmpl, err
	}
	log := r.log.With("template", tmpl, "image", r.opts.ForemanImage)
	if mark != "" {
		log.Warn("dropping an unfinished template")
		if _, err := r.psql(ctx, pg, "postgres", "DROP DATABASE "+tmpl+" WITH (FORCE)"); err != nil {
			return "", err
		}
	}
	start := time.Now()
	pw := randomPassword()
	if err := r.ensureRole(ctx, pg, templateRole, pw); err != nil {
		return "", err
	}
	// Owned by the superuser, so that REASSIGN OWNED in a clone never
	// hands the template itself to a tenant.
	if _, err := r.psql(ctx, pg, "postgres",
		"CREATE DATABASE "+tmpl+" OWNER postgres",
		"REVOKE ALL ON DATABASE "+tmpl+" FROM PUBLIC",
		"GRANT CONNECT, TEMPORARY ON DATABASE "+tmpl+" TO "+templateRole); err != nil {
		return "", err
	}
	if _, err := r.psql(ctx, pg, tmpl, "GRANT USAGE, CREATE ON SCHEMA public TO "+templateRole); err != nil {
		return "", err
	}
	if err := r.migrateSeed(ctx, tmpl, pw); err != nil {
		return "", err
	}
	if _, err := r.psql(ctx, pg, tmpl, "TRUNCATE sessions"); err != nil {
		return "", err
	}
	if _, err := r.psql(ctx, pg, "postgres",
		"ALTER ROLE "+templateRole+" NOLOGIN",
		fmt.Sprintf("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%s'", tmpl),
		"ALTER DATABASE "+tmpl+" ALLOW_CONNECTIONS false",
		fmt.Sprintf("COMMENT ON DATABASE %s IS '%s'", tmpl, markTemplate)); err != nil {
		return "", err
	}
	log.Info("foreman template built", "took", time.Since(start).Round(time.Second))
	return tmpl, nil
}

// migrateSeed runs the image's migrations and seeds into tmpl in a
// one-shot container on the shared network, and removes it on success
// (on failure it stays, for its logs, until the next attempt replaces it).
func (r *Runner) migrateSeed(ctx context.Context, tmpl, pw string) error {
	net, err := r.rt.EnsureSharedNetwork(ctx, pgNetwork)
	if err != nil {
		return err
	}
	spec := r.foremanSpec("", "foreman-template", r.rt.Owner()+"-"+tmpl,
		[]docker.Attachment{{NetworkID: net.ID}},
		[]string{"/bin/sh", "-c", "bin/rails db:migrate && bin/rails db:seed"},
		[]string{"SEED_ADMIN_USER=" + r.opts.SeedAdminUser, "SEED_ORGANIZATION=" + DefaultOrganization,
			"SEED_LOCATION=" + DefaultLocation, "FOREMAN_DB_WAIT=120"},
		map[string]string{
			"DATABASE_URL":        dbURL(templateRole, pw, tmpl),
			"SEED_ADMIN_PASSWORD": r.opts.SeedAdminPassword,
			// The seed encrypts nothing; a fixed key is never used afterwards.
			"ENCRYPTION_KEY": randomPassword()[:32],
		}, nil)
	spec.Restart = "no"
	c, _, err := r.rt.Ensure(ctx, spec)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, r.opts.TemplateTimeout)
	defer cancel()
	code, err := r.rt.WaitExit(wctx, c.ID)
	if err == nil && code != 0 {
		logs, _ := r.rt.Logs(ctx, c.ID, 20)
		err = fmt.Errorf("migrate and seed exited %d:\n%s", code, logs)
	}
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrTemplate, tmpl, err)
	}
	if err := r.rt.Remove(ctx, c.ID); err != nil && !errors.Is(err, docker.ErrNotFound) {
		r.log.Warn("remove the template's migrate container", "err", err)
	}
	return nil
}
