package appliance

import (
	_ "embed"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
// An unknown section or key is an error.
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
	Tenants   TenantsConfig   `ini:"tenants"`
	Vault     VaultConfig     `ini:"vault"`
}

// TenantsConfig is the [tenants] section: onboarding each tenant's own
// Foreman, database and smart-proxy as containers.
type TenantsConfig struct {
	// Runtime is "none" (tenants are records only; their Foremans are
	// run elsewhere) or "docker" (onboarding runs their containers).
	Runtime string `ini:"runtime"`
	// DockerHost is the Docker engine's address; the environment's
	// (DOCKER_HOST, else the local socket) when empty.
	DockerHost string `ini:"docker_host"`
	// ForemanImage runs each tenant's Foreman.
	ForemanImage string `ini:"foreman_image"`
	// PostgresImage runs the one PostgreSQL that holds every tenant's
	// Foreman database.
	PostgresImage string `ini:"postgres_image"`
	// Domain names tenants' containers: foreman.<tenant>.<domain>.
	Domain string `ini:"domain"`
	// BrokerPort is where each tenant's smart-proxy reaches the broker,
	// on the appliance's address on the tenant's network.
	BrokerPort int `ini:"broker_port"`
	// StepTimeout bounds each step of an onboarding or offboarding.
	StepTimeout time.Duration `ini:"step_timeout"`
	// DriftInterval is how often running tenants are checked: dead or
	// removed containers restored, hosts following leases.
	DriftInterval time.Duration `ini:"drift_interval"`
	// OrphanGrace is how long containers labelled for a tenant that is
	// not onboarded are left before they are removed.
	OrphanGrace time.Duration `ini:"orphan_grace"`
}

// VaultConfig is the [vault] section: HashiCorp Vault keeps the secrets and
// issues the certificates. Without an address, the embedded encrypted
// store and an embedded CA do.
type VaultConfig struct {
	// Address is Vault's URL, such as https://vault.example:8200.
	Address string `ini:"address"`
	// TokenFile holds a Vault token; or RoleID and SecretIDFile log in
	// with AppRole. The token is renewed while the appliance runs.
	TokenFile    string `ini:"token_file"`
	RoleID       string `ini:"role_id"`
	SecretIDFile string `ini:"secret_id_file"`
	// KVMount is the KV v2 mount, Root the prefix of every secret in it.
	KVMount string `ini:"kv_mount"`
	Root    string `ini:"root"`
	// PKIMount is the PKI secrets engine issuing tenants' certificates.
	PKIMount string `ini:"pki_mount"`
	// CAFile verifies Vault's TLS certificate; the system's roots when empty.
	CAFile string `ini:"ca_file"`
	// Timeout bounds each call to Vault.
	Timeout time.Duration `ini:"timeout"`
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
	// Endpoint, when set, is a standalone backend (`malleable m2 serve`,
	// http(s)://host:port) that `malleable serve` uses instead of
	// embedding one; Enabled is then ignored. The backend must hold the
	// appliance's admin token.
	Endpoint string `ini:"endpoint"`
	// Appliance is the appliance a standalone backend asks who holds a
	// node before attaching a disk to it or serving its boot script
	// (http(s)://host:port); without it both are refused.
	Appliance string `ini:"appliance"`
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
		Tenants: TenantsConfig{Runtime: "none", ForemanImage: "quay.io/foreman/foreman:3.12", PostgresImage: "postgres:15",
			Domain: "malleable.internal", BrokerPort: 8782, StepTimeout: 10 * time.Minute,
			DriftInterval: time.Minute, OrphanGrace: 10 * time.Minute},
		Vault: VaultConfig{KVMount: "secret", Root: "malleable", PKIMount: "pki", Timeout: 10 * time.Second},
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

// derivedPath is a path that defaults to a file in the data directory, and
// the check a value of it must pass.
type derivedPath struct {
	p      *string
	name   string
	usable func(string) bool
}

// derivedPaths are the paths that default to a file in the data directory.
func (c *Config) derivedPaths() []derivedPath {
	return []derivedPath{
		{&c.Appliance.AdminTokenFile, "admin.token", usablePath},
		{&c.Store.Path, "malleable.db", usableDBPath},
		{&c.Secrets.File, "secrets.enc", usablePath},
		{&c.M2.Dir, "m2", usableDBPath},
	}
}

// SetDataDir moves the data directory to dir, along with every path that
// was derived from the old one; paths set explicitly stay as they are.
// Call Validate afterwards.
func (c *Config) SetDataDir(dir string) {
	for _, d := range c.derivedPaths() {
		if *d.p == filepath.Join(c.Appliance.DataDir, d.name) {
			*d.p = ""
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
