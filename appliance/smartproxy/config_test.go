package smartproxy

import (
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// TestExampleINI: the shipped example parses, points at the appliance on
// this host, and fails validation naming exactly what a site must fill in
// (or what `smart-proxy init` writes).
func TestExampleINI(t *testing.T) {
	cfg, err := ParseConfig(ExampleINI, DefaultConfig())
	if err == nil {
		t.Fatal("the unedited example passes validation")
	}
	for _, want := range []string{"smart_proxy.ssl_certificate: required", "smart_proxy.ssl_private_key: required",
		"smart_proxy.ssl_ca_file: required", "smart_proxy.trusted_hosts: required", "broker.token_file: required",
		"bmc.username: required", "bmc.password_file: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("example's error lacks %q:\n%v", want, err)
		}
	}
	for _, bad := range []string{"unknown", "syntax", "broker.url"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("example's error mentions %q:\n%v", bad, err)
		}
	}
	if cfg.Proxy.HTTPSListen != ":8443" || cfg.Broker.URL != "http://127.0.0.1:8780" ||
		cfg.Broker.StatusTimeout != 2*time.Second || !cfg.M2.Enabled || cfg.M2.BootListen != "" {
		t.Errorf("example parsed as %+v", cfg)
	}
	if DefaultConfig().Broker.URL != "http://127.0.0.1:8780" {
		t.Errorf("default broker URL %q, want the appliance on this host", DefaultConfig().Broker.URL)
	}
}

const validINI = `
[smart_proxy]
ssl_certificate = /p.crt
ssl_private_key = /p.key
ssl_ca_file = /ca.crt
trusted_hosts = foreman.acme.example
[broker]
url = https://appliance.example:8780
token_file = /token
[bmc]
username = acme
password_file = /pw
`

func TestParseConfig(t *testing.T) {
	tests := map[string]struct {
		ini     string
		check   func(Config) bool
		wantErr []string // substrings of the error, all required
	}{
		"valid": {ini: validINI, check: func(c Config) bool {
			return c.Proxy.HTTPSListen == ":8443" && c.Broker.Timeout == 40*time.Second && c.Proxy.ForwardVerify
		}},
		"HTTP only needs no TLS files": {ini: `
[smart_proxy]
https_listen = off
http_listen = 127.0.0.1:8000
trusted_hosts = foreman.acme.example
[broker]
url = http://a:1
token_file = /t
[bmc]
username = acme
password_file = /pw
`, check: func(c Config) bool { return c.Proxy.HTTPSListen == "" && c.Proxy.HTTPListen == "127.0.0.1:8000" }},
		"trusted hosts are lowercased and trimmed": {ini: validINI + "[smart_proxy]\ntrusted_hosts = A.example , ,b.EXAMPLE\n",
			check: func(c Config) bool {
				h := c.Proxy.trustedHosts()
				return len(h) == 2 && h[0] == "a.example" && h[1] == "b.example"
			}},
		"empty file lists every required key": {ini: "", wantErr: []string{
			"smart_proxy.ssl_certificate: required", "smart_proxy.ssl_private_key: required", "smart_proxy.ssl_ca_file: required",
			"smart_proxy.trusted_hosts: required", "broker.token_file: required",
			"bmc.username: required", "bmc.password_file: required"}},
		"unknown key":     {ini: validINI + "[smart_proxy]\nbogus = 1\n", wantErr: []string{"smart_proxy.bogus: unknown key"}},
		"unknown section": {ini: validINI + "[puppet]\nx = 1\n", wantErr: []string{"[puppet]: unknown section"}},
		"bad duration":    {ini: validINI + "[broker]\ntimeout = soon\n", wantErr: []string{"broker.timeout"}},
		"status timeout at Foreman's limit": {ini: validINI + "[broker]\nstatus_timeout = 3s\n",
			wantErr: []string{"broker.status_timeout: 3s must be above 0 and below 3s"}},
		"no listener":        {ini: validINI + "[smart_proxy]\nhttps_listen = OFF\n", wantErr: []string{"smart_proxy.https_listen: set https_listen"}},
		"bad listen address": {ini: validINI + "[smart_proxy]\nhttps_listen = 8443\n[m2]\nboot_listen = x:y\n", wantErr: []string{`smart_proxy.https_listen: "8443" is not host:port`, `m2.boot_listen: "x:y" is not host:port`}},
		"broker URL scheme":  {ini: validINI + "[broker]\nurl = ftp://a\n", wantErr: []string{`broker.url: "ftp://a" is not an absolute http or https URL`}},
		"broker URL query":   {ini: validINI + "[broker]\nurl = http://u:p@a/?x=1\n", wantErr: []string{"must not have credentials, a query or a fragment"}},
		"boot URL":           {ini: validINI + "[m2]\nboot_url = /relative\n", wantErr: []string{"m2.boot_url"}},
		"BMC username colon": {ini: validINI + "[bmc]\nusername = a:b\n", wantErr: []string{"bmc.username: must not contain ':'"}},
		"trusted host space": {ini: validINI + "[smart_proxy]\ntrusted_hosts = a b\n", wantErr: []string{`"a b" contains white space`}},
		"log settings":       {ini: validINI + "[smart_proxy]\nlog_level = loud\nlog_format = xml\n", wantErr: []string{"smart_proxy.log_level", `smart_proxy.log_format: "xml" is not text or json`}},
		"bool":               {ini: validINI + "[m2]\nenabled = maybe\n", wantErr: []string{"m2.enabled"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.ini), DefaultConfig())
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !tc.check(cfg) {
					t.Errorf("parsed as %+v", cfg)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestNewReportsFiles: unreadable TLS and secret files are named.
func TestNewReportsFiles(t *testing.T) {
	ca := proxytest.NewCA(t, "CA")
	dir := t.TempDir()
	tests := map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"password file":  {func(c *Config) { c.BMC.PasswordFile = dir + "/none" }, "bmc.password_file"},
		"empty password": {func(c *Config) { c.BMC.PasswordFile = proxytest.WriteFile(t, dir, "empty", []byte(" \n")) }, "is empty"},
		"certificate":    {func(c *Config) { c.Proxy.SSLCertificate = dir + "/none" }, "smart_proxy.ssl_certificate"},
		"CA file":        {func(c *Config) { c.Proxy.SSLCAFile = proxytest.WriteFile(t, dir, "notpem", []byte("hello")) }, "holds no PEM certificate"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), ca)
			tc.mutate(&cfg)
			_, err := New(cfg, Options{Broker: newFakeBroker(), Storage: newStubStorage()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := OpenClient(BrokerConfig{URL: "http://a", TokenFile: dir + "/none"}); err == nil || !strings.Contains(err.Error(), "broker.token_file") {
		t.Errorf("OpenClient without a token file: %v", err)
	}
}
