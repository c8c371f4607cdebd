package appliance

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := map[string]struct {
		ini   string
		check func(t *testing.T, c Config)
		// errs are substrings that must all appear in the error; none means
		// the file must be accepted.
		errs []string
	}{
		"empty file keeps defaults": {
			ini: "",
			check: func(t *testing.T, c Config) {
				if c.Appliance.Listen != DefaultListen || c.Leases.DefaultDuration != 7*24*time.Hour {
					t.Errorf("defaults not kept: %+v", c)
				}
				if c.Store.Path != "/data/malleable.db" || c.Appliance.AdminTokenFile != "/data/admin.token" {
					t.Errorf("derived paths: store %q token %q", c.Store.Path, c.Appliance.AdminTokenFile)
				}
			},
		},
		"values override defaults": {
			ini: "[appliance]\nlisten = 0.0.0.0:9000\ndata_dir = /srv/m\nlog_format = json\n[leases]\nmax_duration = 720h\n",
			check: func(t *testing.T, c Config) {
				if c.Appliance.Listen != "0.0.0.0:9000" || c.Appliance.LogFormat != "json" || c.Leases.MaxDuration != 720*time.Hour {
					t.Errorf("overrides not applied: %+v", c)
				}
				if c.Store.Path != "/srv/m/malleable.db" {
					t.Errorf("store path should follow data_dir, got %q", c.Store.Path)
				}
			},
		},
		"hash inside a value is kept": {
			ini:  "[store]\npath = /srv/a#b.db\n",
			errs: []string{"store.path"}, // '#' is refused in a database path, but not as a comment
		},
		"explicit store path and IPv6 listen": {
			ini: "[appliance]\nlisten = [::1]:8780\n[store]\npath = /var/db/x.db\n",
			check: func(t *testing.T, c Config) {
				if c.Store.Path != "/var/db/x.db" || c.Appliance.Listen != "[::1]:8780" {
					t.Errorf("got %+v", c)
				}
			},
		},
		"port zero picks a free port": {
			ini: "[appliance]\nlisten = 127.0.0.1:0\n",
		},
		"unknown key, bad duration and bad address together": {
			ini:  "[appliance]\nlisten = not an address\nlisten_port = 80\n[leases]\nmax_duration = 3 weeks\n",
			errs: []string{"appliance.listen_port: unknown key", "leases.max_duration: \"3 weeks\" is not a duration", "appliance.listen: \"not an address\" is not host:port"},
		},
		"unknown section": {
			ini:  "[docker]\nhost = unix:///run/docker.sock\n",
			errs: []string{"[docker]: unknown section"},
		},
		"m2 endpoint in clear text": {
			ini:  "[m2]\nendpoint = http://storage.example:8781\nappliance = ftp://x:1\n",
			errs: []string{"m2.endpoint: \"http://storage.example:8781\": the admin token crosses this link: use https", "m2.appliance: \"ftp://x:1\" is not http(s)://host:port"},
		},
		"vault without a credential": {
			ini:  "[vault]\naddress = http://127.0.0.1:8200\n",
			errs: []string{"vault.token_file: set either token_file or role_id"},
		},
		"tenants": {
			ini: "[tenants]\nruntime = podman\nforeman_image = Foreman!\ndomain = local\nbroker_port = 0\nstep_timeout = 1s\n",
			errs: []string{"tenants.runtime: \"podman\" is not none or docker", "tenants.foreman_image: \"Foreman!\" is not an image reference",
				"tenants.domain: \"local\" is not a DNS domain", "tenants.broker_port: 0 is not a port", "tenants.step_timeout: 1s is not between"},
		},
		"key outside a section": {
			ini:  "listen = 1.2.3.4:5\n",
			errs: []string{"listen: key outside any section"},
		},
		"syntax error": {
			ini:  "[appliance\n",
			errs: []string{"syntax"},
		},
		"bad log level and format": {
			ini:  "[appliance]\nlog_level = loud\nlog_format = xml\n",
			errs: []string{"appliance.log_level", "appliance.log_format"},
		},
		"port out of range": {
			ini:  "[appliance]\nlisten = 127.0.0.1:70000\n",
			errs: []string{"appliance.listen"},
		},
		"negative duration": {
			ini:  "[appliance]\nshutdown_timeout = -5s\n",
			errs: []string{"appliance.shutdown_timeout: \"-5s\" is negative"},
		},
		"inconsistent lease limits": {
			ini:  "[leases]\nmin_duration = 2h\nmax_duration = 1h\ndefault_duration = 30m\n",
			errs: []string{"leases.max_duration", "leases.default_duration"},
		},
		"sub-second minimum": {
			ini:  "[leases]\nmin_duration = 10ms\n",
			errs: []string{"leases.min_duration"},
		},
		"m2 deadlines": {
			ini: "[m2]\ntransfer_timeout = 2h\noperation_timeout = 90m\n",
			check: func(t *testing.T, c Config) {
				if c.M2.TransferTimeout != 2*time.Hour || c.M2.OperationTimeout != 90*time.Minute {
					t.Errorf("m2 timeouts: %s, %s", c.M2.TransferTimeout, c.M2.OperationTimeout)
				}
			},
		},
		"m2 deadlines out of range": {
			ini:  "[m2]\ntransfer_timeout = 10ms\noperation_timeout = 48h\n",
			errs: []string{"m2.transfer_timeout", "m2.operation_timeout"},
		},
		"store path with a query": {
			ini:  "[store]\npath = /tmp/x.db?mode=memory\n",
			errs: []string{"store.path"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.ini), DefaultConfig("/data"))
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want *ConfigError, got %v", err)
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q:\n%v", want, err)
				}
			}
			if len(ce.Problems) < len(tc.errs) {
				t.Errorf("want at least %d problems, got %d: %v", len(tc.errs), len(ce.Problems), ce.Problems)
			}
		})
	}
}

// The shipped example must be accepted and must say what the defaults are.
func TestExampleConfigMatchesDefaults(t *testing.T) {
	defaults := DefaultConfig("/var/lib/malleable")
	got, err := ParseConfig(ExampleINI, defaults)
	if err != nil {
		t.Fatalf("example appliance.ini refused: %v", err)
	}
	if err := defaults.Validate(); err != nil {
		t.Fatal(err)
	}
	if got != defaults {
		t.Errorf("example differs from the built-in defaults:\nexample  %+v\ndefaults %+v", got, defaults)
	}
}

func TestValidateMakesPathsAbsolute(t *testing.T) {
	c := DefaultConfig("rel/data")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(c.Appliance.DataDir) || !filepath.IsAbs(c.Store.Path) || !filepath.IsAbs(c.Appliance.AdminTokenFile) {
		t.Errorf("paths not absolute: %+v", c)
	}
}

// Moving the data directory moves every path derived from it, and only those.
func TestSetDataDir(t *testing.T) {
	c, err := ParseConfig([]byte("[store]\npath = /db/explicit.db\n"), DefaultConfig("/old"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDataDir("/new")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Appliance.AdminTokenFile != "/new/admin.token" || c.Secrets.File != "/new/secrets.enc" {
		t.Errorf("derived paths did not move: token %q secrets %q", c.Appliance.AdminTokenFile, c.Secrets.File)
	}
	if c.Store.Path != "/db/explicit.db" {
		t.Errorf("explicit store path moved to %q", c.Store.Path)
	}
}
