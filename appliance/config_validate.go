package appliance

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inicfg"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
)

// Validate completes the configuration (complete), then checks the values
// of every section and reports all problems at once in a *ConfigError.
func (c *Config) Validate() error {
	c.complete()
	var p problems
	c.Appliance.check(&p)
	c.Store.check(&p)
	c.Secrets.check(&p)
	c.Reconcile.check(&p)
	c.Allocator.check(&p, c.HIL)
	c.BMC.check(&p)
	c.Broker.check(&p)
	c.Nodes.check(&p)
	c.M2.check(&p)
	c.Leases.check(&p)
	c.Tenants.check(&p)
	c.Vault.check(&p)
	if len(p) > 0 {
		return &ConfigError{Problems: p}
	}
	return nil
}

// complete fills what the configuration leaves to be derived, the one place
// defaults are filled after parsing: an unset path under the data directory
// defaults to its file there (derivedPaths), and every usable path becomes
// absolute. Derived paths are then checked
// like given ones: a data_dir that makes a bad database path is refused at
// once, not at start-up.
func (c *Config) complete() {
	a := &c.Appliance
	if usablePath(a.DataDir) {
		a.DataDir = absPath(a.DataDir)
	}
	for _, d := range c.derivedPaths() {
		if *d.p == "" && a.DataDir != "" {
			*d.p = filepath.Join(a.DataDir, d.name)
		}
		if d.usable(*d.p) {
			*d.p = absPath(*d.p)
		}
	}
}

// problems collects every problem of a configuration, each as
// "section.key: message".
type problems []string

func (p *problems) bad(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

// usablePath reports whether p may name a file: set, without control
// characters.
func usablePath(p string) bool { return p != "" && checkPath(p) == nil }

// usableDBPath is usablePath for paths that end up in a URL-like data
// source name (SQLite's), where '?' and '#' have a meaning.
func usableDBPath(p string) bool { return usablePath(p) && !strings.ContainsAny(p, "?#") }

func (a *ApplianceConfig) check(p *problems) {
	if !validListen(a.Listen) {
		p.bad("appliance.listen", "%q is not host:port (for example %s)", a.Listen, DefaultListen)
	}
	if a.DataDir == "" {
		p.bad("appliance.data_dir", "is required")
	} else if err := checkPath(a.DataDir); err != nil {
		p.bad("appliance.data_dir", "%v", err)
	}
	if !usablePath(a.AdminTokenFile) {
		p.bad("appliance.admin_token_file", "%q is not a usable file path", a.AdminTokenFile)
	}
	if _, err := inicfg.ParseLogLevel(a.LogLevel); err != nil {
		p.bad("appliance.log_level", "%v", err)
	}
	if a.LogFormat != "text" && a.LogFormat != "json" {
		p.bad("appliance.log_format", "%q is not text or json", a.LogFormat)
	}
	if a.ShutdownTimeout <= 0 || a.ShutdownTimeout > 10*time.Minute {
		p.bad("appliance.shutdown_timeout", "%s is not between 0s and 10m", a.ShutdownTimeout)
	}
}

func (s *StoreConfig) check(p *problems) {
	if !usableDBPath(s.Path) {
		p.bad("store.path", "%q is not a usable file path", s.Path)
	}
}

func (s *SecretsConfig) check(p *problems) {
	if !usablePath(s.File) {
		p.bad("secrets.file", "%q is not a usable file path", s.File)
	}
}

func (rc *ReconcileConfig) check(p *problems) {
	if err := reconcile.CheckSchedule(rc.Schedule); err != nil {
		p.bad("reconcile.schedule", "%v", err)
	}
	if rc.Concurrency < 1 || rc.Concurrency > 256 {
		p.bad("reconcile.concurrency", "%d is not 1-256", rc.Concurrency)
	}
	if rc.MaxAttempts < 1 || rc.MaxAttempts > 1000 {
		p.bad("reconcile.max_attempts", "%d is not 1-1000", rc.MaxAttempts)
	}
	if rc.PowerOffTimeout < time.Second || rc.PowerOffTimeout > 30*time.Minute {
		p.bad("reconcile.power_off_timeout", "%s is not between 1s and 30m", rc.PowerOffTimeout)
	}
}

var projectPrefixRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// check checks [allocator], and [hil] when the allocator is HIL.
func (al *AllocatorConfig) check(p *problems, hil HILConfig) {
	switch al.Type {
	case "embedded":
	case "hil":
		hil.check(p)
	default:
		p.bad("allocator.type", "%q is not embedded or hil", al.Type)
	}
	if pre := al.ProjectPrefix; len(pre) > 20 || (pre != "" && !projectPrefixRE.MatchString(pre)) {
		p.bad("allocator.project_prefix", "%q must be up to 20 characters of a-z, 0-9 and '-'", pre)
	}
}

func (h *HILConfig) check(p *problems) {
	if err := inventory.ValidateURL("hil.endpoint", h.Endpoint); err != nil || h.Endpoint == "" {
		p.bad("hil.endpoint", "%q is not an http(s) URL without credentials (required when [allocator] type = hil)", h.Endpoint)
	}
	if h.Timeout <= 0 || h.Timeout > 5*time.Minute {
		p.bad("hil.timeout", "%s is not between 0s and 5m", h.Timeout)
	}
	if h.PasswordFile != "" {
		if err := checkPath(h.PasswordFile); err != nil {
			p.bad("hil.password_file", "%v", err)
		}
	}
}

func (b *BMCConfig) check(p *problems) {
	if b.Timeout < 100*time.Millisecond || b.Timeout > time.Minute {
		p.bad("bmc.timeout", "%s is not between 100ms and 1m", b.Timeout)
	}
	if b.Retries < 0 || b.Retries > 10 {
		p.bad("bmc.retries", "%d is not 0-10", b.Retries)
	}
}

func (b *BrokerConfig) check(p *problems) {
	if b.StatusCacheTTL < 0 || b.StatusCacheTTL > 10*time.Minute {
		p.bad("broker.status_cache_ttl", "%s is not between 0s and 10m", b.StatusCacheTTL)
	}
}

func (n *NodesConfig) check(p *problems) {
	if pre, err := netip.ParsePrefix(n.TenantBMCRange); err != nil || inventory.ValidateTenantBMCRange("nodes.tenant_bmc_range", pre) != nil {
		p.bad("nodes.tenant_bmc_range", "%q is not an IPv4 network from /8 to /30 without host bits, such as 198.18.0.0/15", n.TenantBMCRange)
	}
}

var iqnPrefixRE = regexp.MustCompile(`^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)

func (m *M2Config) check(p *problems) {
	if !usableDBPath(m.Dir) {
		p.bad("m2.dir", "%q is not a usable directory path", m.Dir)
	}
	if !validListen(m.Listen) {
		p.bad("m2.listen", "%q is not host:port", m.Listen)
	}
	if _, err := parseEndpoint(m.Endpoint); m.Endpoint != "" && err != nil {
		p.bad("m2.endpoint", "%v", err)
	}
	if _, err := parseEndpoint(m.Appliance); m.Appliance != "" && err != nil {
		p.bad("m2.appliance", "%v", err)
	}
	if !iqnPrefixRE.MatchString(m.IQNPrefix) || len(m.IQNPrefix) > 100 {
		p.bad("m2.iqn_prefix", "%q is not iqn.<yyyy-mm>.<reversed domain>, such as iqn.2026-11.org.example", m.IQNPrefix)
	}
	if !validListen(m.Portal) || strings.HasSuffix(m.Portal, ":0") {
		p.bad("m2.portal", "%q is not host:port with a port", m.Portal)
	}
	if m.BootPortal != "" && (!validListen(m.BootPortal) || strings.HasSuffix(m.BootPortal, ":0")) {
		p.bad("m2.boot_portal", "%q is not host:port with a port", m.BootPortal)
	}
	if m.Tgtd != "supervise" && m.Tgtd != "external" {
		p.bad("m2.tgtd", "%q is not supervise or external", m.Tgtd)
	}
	if m.TgtdControlPort < 0 || m.TgtdControlPort > 32767 {
		p.bad("m2.tgtd_control_port", "%d is not 0-32767", m.TgtdControlPort)
	}
	if m.TransferTimeout < time.Second || m.TransferTimeout > 24*time.Hour {
		p.bad("m2.transfer_timeout", "%s is not between 1s and 24h", m.TransferTimeout)
	}
	if m.OperationTimeout < time.Second || m.OperationTimeout > 24*time.Hour {
		p.bad("m2.operation_timeout", "%s is not between 1s and 24h", m.OperationTimeout)
	}
}

func (l *LeasesConfig) check(p *problems) {
	if l.MinDuration < time.Second {
		p.bad("leases.min_duration", "%s is shorter than 1s", l.MinDuration)
	}
	if l.MaxDuration < l.MinDuration {
		p.bad("leases.max_duration", "%s is shorter than leases.min_duration %s", l.MaxDuration, l.MinDuration)
	}
	if l.DefaultDuration < l.MinDuration || l.DefaultDuration > l.MaxDuration {
		p.bad("leases.default_duration", "%s is not between leases.min_duration and leases.max_duration", l.DefaultDuration)
	}
	if l.MaxAdvance <= 0 {
		p.bad("leases.max_advance", "%s must be positive", l.MaxAdvance)
	}
}

var domainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)

var imageRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`)

func (t *TenantsConfig) check(p *problems) {
	if t.Runtime != "none" && t.Runtime != "docker" {
		p.bad("tenants.runtime", "%q is not none or docker", t.Runtime)
	}
	if t.DockerHost != "" && !strings.HasPrefix(t.DockerHost, "unix:///") && !strings.HasPrefix(t.DockerHost, "tcp://") {
		p.bad("tenants.docker_host", "%q is not unix:///path or tcp://host:port", t.DockerHost)
	}
	for key, img := range map[string]string{"tenants.foreman_image": t.ForemanImage, "tenants.postgres_image": t.PostgresImage} {
		if len(img) > 255 || !imageRE.MatchString(img) {
			p.bad(key, "%q is not an image reference such as quay.io/foreman/foreman:3.12", img)
		}
	}
	if len(t.Domain) > 100 || !domainRE.MatchString(t.Domain) {
		p.bad("tenants.domain", "%q is not a DNS domain such as malleable.internal", t.Domain)
	}
	if t.BrokerPort < 1 || t.BrokerPort > 65535 {
		p.bad("tenants.broker_port", "%d is not a port", t.BrokerPort)
	}
	if t.StepTimeout < 10*time.Second || t.StepTimeout > 2*time.Hour {
		p.bad("tenants.step_timeout", "%s is not between 10s and 2h", t.StepTimeout)
	}
	if t.DriftInterval < time.Second || t.DriftInterval > time.Hour {
		p.bad("tenants.drift_interval", "%s is not between 1s and 1h", t.DriftInterval)
	}
	if t.OrphanGrace < 0 || t.OrphanGrace > 7*24*time.Hour {
		p.bad("tenants.orphan_grace", "%s is not between 0s and 168h", t.OrphanGrace)
	}
}

func (v *VaultConfig) check(p *problems) {
	if v.Address == "" {
		return
	}
	if u, err := url.Parse(v.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.bad("vault.address", "%q is not http(s)://host:port", v.Address)
	}
	if (v.TokenFile == "") == (v.RoleID == "") {
		p.bad("vault.token_file", "set either token_file or role_id (with secret_id_file)")
	}
	if v.RoleID != "" && v.SecretIDFile == "" {
		p.bad("vault.secret_id_file", "role_id needs secret_id_file")
	}
	if v.Timeout < time.Second || v.Timeout > 5*time.Minute {
		p.bad("vault.timeout", "%s is not between 1s and 5m", v.Timeout)
	}
}
