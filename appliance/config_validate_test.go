package appliance

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestValidateReportsEverySection: a configuration wrong in every key of
// every section gets every problem at once, in section order, each with its
// own message; derived paths that a bad data_dir would make are refused too.
func TestValidateReportsEverySection(t *testing.T) {
	tests := map[string]struct {
		edit func(c *Config)
		want []string
	}{
		"everything wrong, embedded allocator": {
			edit: func(c *Config) {
				c.Appliance = ApplianceConfig{Listen: "nowhere", DataDir: "/d\x01", LogLevel: "loud", LogFormat: "xml", ShutdownTimeout: 11 * time.Minute}
				c.Reconcile = ReconcileConfig{Schedule: "TZ=UTC @hourly", Concurrency: 0, MaxAttempts: 1001, PowerOffTimeout: time.Hour}
				c.Allocator = AllocatorConfig{Type: "maas", ProjectPrefix: "Upper"}
				c.BMC = BMCConfig{Timeout: time.Millisecond, Retries: 11}
				c.Broker = BrokerConfig{StatusCacheTTL: -time.Second}
				c.Nodes = NodesConfig{TenantBMCRange: "10.0.0.1/8"}
				c.M2 = M2Config{Listen: "x", IQNPrefix: "iqn.2026-13.org", Portal: "127.0.0.1:0", BootPortal: "y", Tgtd: "systemd",
					TgtdControlPort: 40000, TransferTimeout: 25 * time.Hour, OperationTimeout: 0}
				c.Leases = LeasesConfig{MinDuration: time.Millisecond, MaxDuration: 0, DefaultDuration: time.Hour, MaxAdvance: 0}
			},
			want: []string{
				`appliance.listen: "nowhere" is not host:port (for example 127.0.0.1:8780)`,
				"appliance.data_dir: contains control characters",
				"appliance.admin_token_file: \"/d\\x01/admin.token\" is not a usable file path",
				`appliance.log_level: "loud" is not debug, info, warn or error`,
				`appliance.log_format: "xml" is not text or json`,
				"appliance.shutdown_timeout: 11m0s is not between 0s and 10m",
				"store.path: \"/d\\x01/malleable.db\" is not a usable file path",
				"secrets.file: \"/d\\x01/secrets.enc\" is not a usable file path",
				`reconcile.schedule: "TZ=UTC @hourly": time zones are not allowed; the reconciler runs in UTC`,
				"reconcile.concurrency: 0 is not 1-256",
				"reconcile.max_attempts: 1001 is not 1-1000",
				"reconcile.power_off_timeout: 1h0m0s is not between 1s and 30m",
				`allocator.type: "maas" is not embedded or hil`,
				`allocator.project_prefix: "Upper" must be up to 20 characters of a-z, 0-9 and '-'`,
				"bmc.timeout: 1ms is not between 100ms and 1m",
				"bmc.retries: 11 is not 0-10",
				"broker.status_cache_ttl: -1s is not between 0s and 10m",
				`nodes.tenant_bmc_range: "10.0.0.1/8" is not an IPv4 network from /8 to /30 without host bits, such as 198.18.0.0/15`,
				"m2.dir: \"/d\\x01/m2\" is not a usable directory path",
				`m2.listen: "x" is not host:port`,
				`m2.iqn_prefix: "iqn.2026-13.org" is not iqn.<yyyy-mm>.<reversed domain>, such as iqn.2026-11.org.example`,
				`m2.portal: "127.0.0.1:0" is not host:port with a port`,
				`m2.boot_portal: "y" is not host:port with a port`,
				`m2.tgtd: "systemd" is not supervise or external`,
				"m2.tgtd_control_port: 40000 is not 0-32767",
				"m2.transfer_timeout: 25h0m0s is not between 1s and 24h",
				"m2.operation_timeout: 0s is not between 1s and 24h",
				"leases.min_duration: 1ms is shorter than 1s",
				"leases.max_duration: 0s is shorter than leases.min_duration 1ms",
				"leases.default_duration: 1h0m0s is not between leases.min_duration and leases.max_duration",
				"leases.max_advance: 0s must be positive",
			},
		},
		"hil allocator": {
			edit: func(c *Config) {
				c.Allocator.Type = "hil"
				c.HIL = HILConfig{Endpoint: "http://u:p@hil.example", Timeout: 6 * time.Minute, PasswordFile: "/p\x02"}
			},
			want: []string{
				`hil.endpoint: "http://u:p@hil.example" is not an http(s) URL without credentials (required when [allocator] type = hil)`,
				"hil.timeout: 6m0s is not between 0s and 5m",
				"hil.password_file: contains control characters",
			},
		},
		"no data_dir": {
			edit: func(c *Config) { c.Appliance.DataDir = "" },
			want: []string{
				"appliance.data_dir: is required",
				`appliance.admin_token_file: "" is not a usable file path`,
				`store.path: "" is not a usable file path`,
				`secrets.file: "" is not a usable file path`,
				`m2.dir: "" is not a usable directory path`,
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig("/data")
			tc.edit(&c)
			var ce *ConfigError
			if err := c.Validate(); !errors.As(err, &ce) {
				t.Fatalf("want *ConfigError, got %v", err)
			}
			if !slices.Equal(ce.Problems, tc.want) {
				t.Errorf("problems:\n%q\nwant\n%q", ce.Problems, tc.want)
			}
		})
	}
}
