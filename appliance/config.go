package appliance

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/malleable-cloud/malleable/appliance/inicfg"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// DefaultListen is where the admin API listens when nothing else is said:
// loopback only, so a fresh appliance is not reachable from the network.
const DefaultListen = "127.0.0.1:8780"

// ExampleINI is the commented example configuration shipped with the binary
// (`malleable config example`). It holds the defaults.
//
//go:embed appliance.ini
var ExampleINI []byte

// Config is the whole appliance configuration, one field per INI section.
// Later capabilities add sections here ([reconcile], [docker], [vault],
// [hil], [m2], [foreman]); an unknown section or key is an error.
type Config struct {
	Appliance ApplianceConfig `ini:"appliance"`
	Store     StoreConfig     `ini:"store"`
	Secrets   SecretsConfig   `ini:"secrets"`
	Leases    LeasesConfig    `ini:"leases"`
	Reconcile ReconcileConfig `ini:"reconcile"`
	Allocator AllocatorConfig `ini:"allocator"`
	HIL       HILConfig       `ini:"hil"`
	BMC       BMCConfig       `ini:"bmc"`
	Broker    BrokerConfig    `ini:"broker"`
	Nodes     NodesConfig     `ini:"nodes"`
	M2        M2Config        `ini:"m2"`
}

// NodesConfig is the [nodes] section: what the appliance gives each node.
type NodesConfig struct {
	// TenantBMCRange is the IPv4 network tenant-facing BMC addresses come
	// from: each node gets one, stable and unique, that its tenants'
	// Foremans store as the host's BMC address.
	TenantBMCRange string `ini:"tenant_bmc_range"`
}

// TenantBMCPrefix returns TenantBMCRange parsed; Validate checked it.
func (c NodesConfig) TenantBMCPrefix() netip.Prefix {
	p, _ := netip.ParsePrefix(c.TenantBMCRange)
	return p
}

// M2Config is the [m2] section: the M2 storage backend (golden images,
// disks, snapshots, iSCSI targets), embedded in `malleable serve` or run
// alone by `malleable m2 serve`.
type M2Config struct {
	// Enabled embeds the backend in `malleable serve`.
	Enabled bool `ini:"enabled"`
	// Dir holds the volumes and the backend's metadata database.
	// Defaults to <data_dir>/m2.
	Dir string `ini:"dir"`
	// Listen is the M2 API's address when run alone (`malleable m2 serve`).
	Listen string `ini:"listen"`
	// IQNPrefix names targets and initiators: iqn.<yyyy-mm>.<reversed
	// domain the operator owns>.
	IQNPrefix string `ini:"iqn_prefix"`
	// Portal is where tgtd listens for iSCSI (host:port).
	Portal string `ini:"portal"`
	// BootPortal is the portal as nodes reach it, written into boot
	// scripts; defaults to Portal.
	BootPortal string `ini:"boot_portal"`
	// Tgtd is "supervise" (the appliance runs its own tgtd) or "external"
	// (a tgtd already runs on TgtdControlPort).
	Tgtd string `ini:"tgtd"`
	// TgtdControlPort is tgtd's -C: it names tgtd's control socket.
	TgtdControlPort int `ini:"tgtd_control_port"`
	// TransferTimeout bounds receiving an uploaded golden image (408
	// past it); it replaces the API's general 30 s read timeout there.
	TransferTimeout time.Duration `ini:"transfer_timeout"`
	// OperationTimeout bounds an image import or upload, a create_disk or
	// a snapshot from start to finish (504 past it).
	OperationTimeout time.Duration `ini:"operation_timeout"`
}

// SecretsConfig is the [secrets] section: the embedded encrypted store
// (Vault arrives with tenant onboarding).
type SecretsConfig struct {
	// File holds the encrypted secrets; its key is File + ".key".
	// Defaults to <data_dir>/secrets.enc.
	File string `ini:"file"`
}

// ReconcileConfig is the [reconcile] section: the cron-driven reconciler
// that hands nodes over at lease boundaries.
type ReconcileConfig struct {
	// Schedule is a cron spec (UTC): five fields, or @every <duration>.
	Schedule string `ini:"schedule"`
	// Concurrency bounds the handovers run at once.
	Concurrency int `ini:"concurrency"`
	// MaxAttempts failures of one handover step mark it stuck.
	MaxAttempts int `ini:"max_attempts"`
	// PowerOffTimeout bounds waiting for a node to read off.
	PowerOffTimeout time.Duration `ini:"power_off_timeout"`
}

// AllocatorConfig is the [allocator] section.
type AllocatorConfig struct {
	// Type is embedded (project membership here, power over IPMI) or hil.
	Type string `ini:"type"`
	// ProjectPrefix makes a tenant's allocator project: prefix + tenant.
	ProjectPrefix string `ini:"project_prefix"`
}

// HILConfig is the [hil] section, used when [allocator] type = hil.
type HILConfig struct {
	Endpoint string `ini:"endpoint"`
	Username string `ini:"username"`
	// PasswordFile holds the HIL password: secrets never go in this file.
	PasswordFile string        `ini:"password_file"`
	Timeout      time.Duration `ini:"timeout"`
}

// BMCConfig is the [bmc] section: IPMI to nodes' BMCs.
type BMCConfig struct {
	// Timeout is the wait for one IPMI answer.
	Timeout time.Duration `ini:"timeout"`
	// Retries is how many more times an unanswered request is sent.
	Retries int `ini:"retries"`
}

// BrokerConfig is the [broker] section: the API tenants' smart-proxies call.
type BrokerConfig struct {
	// StatusCacheTTL is how long a node's power state is served from cache;
	// power commands refresh it.
	StatusCacheTTL time.Duration `ini:"status_cache_ttl"`
}

// ApplianceConfig is the [appliance] section: the daemon itself.
type ApplianceConfig struct {
	// Listen is the admin API's host:port.
	Listen string `ini:"listen"`
	// DataDir holds the database and the generated admin token. Created
	// with mode 0700 if missing.
	DataDir string `ini:"data_dir"`
	// AdminTokenFile holds the admin API bearer token; generated (0600) if
	// missing. Defaults to <data_dir>/admin.token.
	AdminTokenFile string `ini:"admin_token_file"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `ini:"log_level"`
	// LogFormat is text or json.
	LogFormat string `ini:"log_format"`
	// ShutdownTimeout bounds the graceful shutdown on SIGTERM.
	ShutdownTimeout time.Duration `ini:"shutdown_timeout"`
}

// StoreConfig is the [store] section: the SQLite state database.
type StoreConfig struct {
	// Path of the database file. Defaults to <data_dir>/malleable.db.
	Path string `ini:"path"`
}

// LeasesConfig is the [leases] section: limits on what admins may book.
type LeasesConfig struct {
	MinDuration     time.Duration `ini:"min_duration"`
	MaxDuration     time.Duration `ini:"max_duration"`
	DefaultDuration time.Duration `ini:"default_duration"`
	MaxAdvance      time.Duration `ini:"max_advance"`
}

// Limits returns the lease limits the section configures.
func (c LeasesConfig) Limits() lease.Limits {
	return lease.Limits{MinDuration: c.MinDuration, MaxDuration: c.MaxDuration,
		DefaultDuration: c.DefaultDuration, MaxAdvance: c.MaxAdvance}
}

// DefaultConfig returns the embedded defaults with data kept in dataDir.
func DefaultConfig(dataDir string) Config {
	lim := lease.DefaultLimits()
	return Config{
		Appliance: ApplianceConfig{
			Listen:          DefaultListen,
			DataDir:         dataDir,
			LogLevel:        "info",
			LogFormat:       "text",
			ShutdownTimeout: 15 * time.Second,
		},
		Leases: LeasesConfig{
			MinDuration: lim.MinDuration, MaxDuration: lim.MaxDuration,
			DefaultDuration: lim.DefaultDuration, MaxAdvance: lim.MaxAdvance,
		},
		Reconcile: ReconcileConfig{Schedule: "@every 15s", Concurrency: 8, MaxAttempts: 5, PowerOffTimeout: time.Minute},
		Allocator: AllocatorConfig{Type: "embedded", ProjectPrefix: "malleable-"},
		HIL:       HILConfig{Timeout: 10 * time.Second},
		BMC:       BMCConfig{Timeout: time.Second, Retries: 2},
		Broker:    BrokerConfig{StatusCacheTTL: 5 * time.Second},
		Nodes:     NodesConfig{TenantBMCRange: inventory.DefaultTenantBMCRange.String()},
		M2: M2Config{Enabled: true, Listen: "127.0.0.1:8781", IQNPrefix: "iqn.2026-11.io.malleable",
			Portal: "127.0.0.1:3260", Tgtd: "supervise", TgtdControlPort: 7,
			TransferTimeout: time.Hour, OperationTimeout: time.Hour},
	}
}

// ConfigError lists every problem found in a configuration, each naming
// its section.key.
type ConfigError = inicfg.Error

// ParseConfig reads INI data over defaults, then validates and completes
// the result (derived paths). Every problem — syntax, unknown sections and
// keys, values of the wrong type, values out of range — is reported together
// in a *ConfigError, each naming its section.key.
func ParseConfig(data []byte, defaults Config) (Config, error) {
	cfg := defaults
	problems := inicfg.Decode(data, &cfg)
	var ce *ConfigError
	if err := cfg.Validate(); errors.As(err, &ce) {
		problems = append(problems, ce.Problems...)
	}
	if len(problems) > 0 {
		return cfg, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// Validate checks the values of every section, completes derived paths, and
// reports all problems at once in a *ConfigError.
func (c *Config) Validate() error {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }

	a := &c.Appliance
	if !validListen(a.Listen) {
		bad("appliance.listen", "%q is not host:port (for example %s)", a.Listen, DefaultListen)
	}
	if a.DataDir == "" {
		bad("appliance.data_dir", "is required")
	} else if err := checkPath(a.DataDir); err != nil {
		bad("appliance.data_dir", "%v", err)
	} else {
		a.DataDir = absPath(a.DataDir)
	}
	// Derived paths are checked like given ones: a data_dir that makes a
	// bad database path is refused now, not at start-up.
	if a.AdminTokenFile == "" && a.DataDir != "" {
		a.AdminTokenFile = filepath.Join(a.DataDir, "admin.token")
	}
	if err := checkPath(a.AdminTokenFile); err != nil || a.AdminTokenFile == "" {
		bad("appliance.admin_token_file", "%q is not a usable file path", a.AdminTokenFile)
	} else {
		a.AdminTokenFile = absPath(a.AdminTokenFile)
	}
	if _, err := inicfg.ParseLogLevel(a.LogLevel); err != nil {
		bad("appliance.log_level", "%v", err)
	}
	if a.LogFormat != "text" && a.LogFormat != "json" {
		bad("appliance.log_format", "%q is not text or json", a.LogFormat)
	}
	if a.ShutdownTimeout <= 0 || a.ShutdownTimeout > 10*time.Minute {
		bad("appliance.shutdown_timeout", "%s is not between 0s and 10m", a.ShutdownTimeout)
	}

	if c.Store.Path == "" && a.DataDir != "" {
		c.Store.Path = filepath.Join(a.DataDir, "malleable.db")
	}
	if err := checkPath(c.Store.Path); err != nil || c.Store.Path == "" || strings.ContainsAny(c.Store.Path, "?#") {
		bad("store.path", "%q is not a usable file path", c.Store.Path)
	} else {
		c.Store.Path = absPath(c.Store.Path)
	}

	if c.Secrets.File == "" && a.DataDir != "" {
		c.Secrets.File = filepath.Join(a.DataDir, "secrets.enc")
	}
	if err := checkPath(c.Secrets.File); err != nil || c.Secrets.File == "" {
		bad("secrets.file", "%q is not a usable file path", c.Secrets.File)
	} else {
		c.Secrets.File = absPath(c.Secrets.File)
	}

	rc := c.Reconcile
	if err := checkSchedule(rc.Schedule); err != nil {
		bad("reconcile.schedule", "%v", err)
	}
	if rc.Concurrency < 1 || rc.Concurrency > 256 {
		bad("reconcile.concurrency", "%d is not 1-256", rc.Concurrency)
	}
	if rc.MaxAttempts < 1 || rc.MaxAttempts > 1000 {
		bad("reconcile.max_attempts", "%d is not 1-1000", rc.MaxAttempts)
	}
	if rc.PowerOffTimeout < time.Second || rc.PowerOffTimeout > 30*time.Minute {
		bad("reconcile.power_off_timeout", "%s is not between 1s and 30m", rc.PowerOffTimeout)
	}

	switch c.Allocator.Type {
	case "embedded":
	case "hil":
		if err := inventory.ValidateURL("hil.endpoint", c.HIL.Endpoint); err != nil || c.HIL.Endpoint == "" {
			bad("hil.endpoint", "%q is not an http(s) URL without credentials (required when [allocator] type = hil)", c.HIL.Endpoint)
		}
		if c.HIL.Timeout <= 0 || c.HIL.Timeout > 5*time.Minute {
			bad("hil.timeout", "%s is not between 0s and 5m", c.HIL.Timeout)
		}
		if c.HIL.PasswordFile != "" {
			if err := checkPath(c.HIL.PasswordFile); err != nil {
				bad("hil.password_file", "%v", err)
			}
		}
	default:
		bad("allocator.type", "%q is not embedded or hil", c.Allocator.Type)
	}
	if p := c.Allocator.ProjectPrefix; len(p) > 20 || (p != "" && !projectPrefixRE.MatchString(p)) {
		bad("allocator.project_prefix", "%q must be up to 20 characters of a-z, 0-9 and '-'", p)
	}
	if c.BMC.Timeout < 100*time.Millisecond || c.BMC.Timeout > time.Minute {
		bad("bmc.timeout", "%s is not between 100ms and 1m", c.BMC.Timeout)
	}
	if c.BMC.Retries < 0 || c.BMC.Retries > 10 {
		bad("bmc.retries", "%d is not 0-10", c.BMC.Retries)
	}
	if c.Broker.StatusCacheTTL < 0 || c.Broker.StatusCacheTTL > 10*time.Minute {
		bad("broker.status_cache_ttl", "%s is not between 0s and 10m", c.Broker.StatusCacheTTL)
	}
	if p, err := netip.ParsePrefix(c.Nodes.TenantBMCRange); err != nil || inventory.ValidateTenantBMCRange("nodes.tenant_bmc_range", p) != nil {
		bad("nodes.tenant_bmc_range", "%q is not an IPv4 network from /8 to /30 without host bits, such as 198.18.0.0/15", c.Nodes.TenantBMCRange)
	}

	m := &c.M2
	if m.Dir == "" && a.DataDir != "" {
		m.Dir = filepath.Join(a.DataDir, "m2")
	}
	if err := checkPath(m.Dir); err != nil || m.Dir == "" || strings.ContainsAny(m.Dir, "?#") {
		bad("m2.dir", "%q is not a usable directory path", m.Dir)
	} else {
		m.Dir = absPath(m.Dir)
	}
	if !validListen(m.Listen) {
		bad("m2.listen", "%q is not host:port", m.Listen)
	}
	if !iqnPrefixRE.MatchString(m.IQNPrefix) || len(m.IQNPrefix) > 100 {
		bad("m2.iqn_prefix", "%q is not iqn.<yyyy-mm>.<reversed domain>, such as iqn.2026-11.org.example", m.IQNPrefix)
	}
	if !validListen(m.Portal) || strings.HasSuffix(m.Portal, ":0") {
		bad("m2.portal", "%q is not host:port with a port", m.Portal)
	}
	if m.BootPortal != "" && (!validListen(m.BootPortal) || strings.HasSuffix(m.BootPortal, ":0")) {
		bad("m2.boot_portal", "%q is not host:port with a port", m.BootPortal)
	}
	if m.Tgtd != "supervise" && m.Tgtd != "external" {
		bad("m2.tgtd", "%q is not supervise or external", m.Tgtd)
	}
	if m.TgtdControlPort < 0 || m.TgtdControlPort > 32767 {
		bad("m2.tgtd_control_port", "%d is not 0-32767", m.TgtdControlPort)
	}
	if m.TransferTimeout < time.Second || m.TransferTimeout > 24*time.Hour {
		bad("m2.transfer_timeout", "%s is not between 1s and 24h", m.TransferTimeout)
	}
	if m.OperationTimeout < time.Second || m.OperationTimeout > 24*time.Hour {
		bad("m2.operation_timeout", "%s is not between 1s and 24h", m.OperationTimeout)
	}

	l := c.Leases
	if l.MinDuration < time.Second {
		bad("leases.min_duration", "%s is shorter than 1s", l.MinDuration)
	}
	if l.MaxDuration < l.MinDuration {
		bad("leases.max_duration", "%s is shorter than leases.min_duration %s", l.MaxDuration, l.MinDuration)
	}
	if l.DefaultDuration < l.MinDuration || l.DefaultDuration > l.MaxDuration {
		bad("leases.default_duration", "%s is not between leases.min_duration and leases.max_duration", l.DefaultDuration)
	}
	if l.MaxAdvance <= 0 {
		bad("leases.max_advance", "%s must be positive", l.MaxAdvance)
	}
	if len(p) > 0 {
		return &ConfigError{Problems: p}
	}
	return nil
}

var projectPrefixRE = regexp.MustCompile(`^[a-z0-9-]+$`)

var iqnPrefixRE = regexp.MustCompile(`^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)

// checkSchedule checks a cron spec the way the reconciler will parse it.
// The cron parser panics on some malformed specs, so it runs under recover.
func checkSchedule(spec string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%q is not a cron schedule", spec)
		}
	}()
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return fmt.Errorf("%q: time zones are not allowed; the reconciler runs in UTC", spec)
	}
	if _, err := cronParser.Parse(spec); err != nil {
		return fmt.Errorf("%q is not a cron schedule (five fields or @every 15s): %v", spec, err)
	}
	return nil
}

// cronParser accepts standard five-field specs and descriptors such as
// @every 15s and @hourly.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// derivedPaths are the paths that default to a file in the data directory.
func (c *Config) derivedPaths() map[*string]string {
	return map[*string]string{
		&c.Appliance.AdminTokenFile: "admin.token",
		&c.Store.Path:               "malleable.db",
		&c.Secrets.File:             "secrets.enc",
		&c.M2.Dir:                   "m2",
	}
}

// SetDataDir moves the data directory to dir, along with every path that
// was derived from the old one; paths set explicitly stay as they are.
// Call Validate afterwards.
func (c *Config) SetDataDir(dir string) {
	for p, name := range c.derivedPaths() {
		if *p == filepath.Join(c.Appliance.DataDir, name) {
			*p = ""
		}
	}
	c.Appliance.DataDir = dir
}

// validListen reports whether s is host:port with an IP address or DNS name
// (or nothing, for every address) and a port 0-65535.
func validListen(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false
	}
	if host == "" {
		return true
	}
	_, _, err = inventory.ParseHostPort("listen", host, 1)
	return err == nil
}

func checkPath(p string) error {
	if strings.ContainsRune(p, 0) || strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 }) {
		return errors.New("contains control characters")
	}
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}
