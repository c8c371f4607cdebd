package smartproxy

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inicfg"
)

// ExampleINI is the commented example configuration shipped with the
// binary (`malleable smart-proxy config example`).
//
//go:embed smartproxy.ini
var ExampleINI []byte

// Config is the smart-proxy's configuration, one field per INI section.
// Secrets (the broker token, the BMC password) are in files the config
// names, never in it.
type Config struct {
	Proxy  ProxyConfig  `ini:"smart_proxy"`
	Broker BrokerConfig `ini:"broker"`
	BMC    BMCConfig    `ini:"bmc"`
	M2     M2Config     `ini:"m2"`
}

// ProxyConfig is the [smart_proxy] section: listeners, TLS and who may call.
type ProxyConfig struct {
	// HTTPSListen is the HTTPS address Foreman calls (host:port), like
	// the Ruby proxy's https_port; "off" turns HTTPS off.
	HTTPSListen string `ini:"https_listen"`
	// HTTPListen serves every route over plain HTTP, clients identified by
	// reverse DNS as the Ruby proxy does; off by default.
	HTTPListen string `ini:"http_listen"`
	// SSLCertificate and SSLPrivateKey are the proxy's server certificate;
	// it must chain to Foreman's ssl_ca_file and name the proxy's host.
	SSLCertificate string `ini:"ssl_certificate"`
	SSLPrivateKey  string `ini:"ssl_private_key"`
	// SSLCAFile verifies client certificates: one from another CA is
	// refused during the handshake.
	SSLCAFile string `ini:"ssl_ca_file"`
	// TrustedHosts lists, comma-separated, the clients allowed on the
	// authorized routes: over HTTPS the certificate's CN, over HTTP the
	// client's verified reverse DNS name. Compared lowercased.
	TrustedHosts string `ini:"trusted_hosts"`
	// ForwardVerify checks, over HTTP, that a client's reverse DNS name
	// resolves back to its address.
	ForwardVerify bool `ini:"forward_verify"`
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string `ini:"log_level"`
	LogFormat string `ini:"log_format"`
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration `ini:"shutdown_timeout"`
}

// BrokerConfig is the [broker] section: the appliance API this proxy asks
// for every decision.
type BrokerConfig struct {
	// URL of the appliance (its broker is under /broker/v1, M2 under /m2/v1).
	URL string `ini:"url"`
	// TokenFile holds the tenant's broker token (`malleable tenant token`):
	// the appliance derives the tenant from it.
	TokenFile string `ini:"token_file"`
	// CAFile verifies an https URL's certificate; system roots when empty.
	CAFile string `ini:"ca_file"`
	// StatusTimeout bounds a power-status call: Foreman shows N/A after 3s.
	StatusTimeout time.Duration `ini:"status_timeout"`
	// Timeout bounds every other call (power actions wait for the BMC).
	Timeout time.Duration `ini:"timeout"`
}

// BMCConfig is the [bmc] section: the tenant's virtual BMC identity. Every
// host in the tenant's Foreman stores this username and password on its
// BMC interface; they are checked here and never reach a real BMC.
type BMCConfig struct {
	Username     string `ini:"username"`
	PasswordFile string `ini:"password_file"`
}

// M2Config is the [m2] section: the M2 plugin under /m2.
type M2Config struct {
	Enabled bool `ini:"enabled"`
	// BootListen is a plain-HTTP address serving only boot scripts
	// (GET /m2/boot/<token>), for iPXE; off by default.
	BootListen string `ini:"boot_listen"`
	// BootURL is the base URL nodes fetch boot scripts from (this proxy's
	// boot listener as nodes reach it); attach answers carry
	// <boot_url>/m2/boot/<token>. Optional.
	BootURL string `ini:"boot_url"`
}

// DefaultBrokerURL is the appliance's admin API on the same host, where
// `malleable serve` listens by default.
const DefaultBrokerURL = "http://127.0.0.1:8780"

// DefaultConfig returns the built-in defaults. The broker is the appliance
// on this host; TLS files, trusted hosts, the token and the BMC identity
// have none: they must be configured.
func DefaultConfig() Config {
	return Config{
		Proxy: ProxyConfig{HTTPSListen: ":8443", ForwardVerify: true, LogLevel: "info", LogFormat: "text",
			ShutdownTimeout: 15 * time.Second},
		Broker: BrokerConfig{URL: DefaultBrokerURL, StatusTimeout: 2 * time.Second, Timeout: 40 * time.Second},
		M2:     M2Config{Enabled: true},
	}
}

// ParseConfig reads INI data over defaults and validates the result. All
// problems (syntax, unknown sections and keys, bad values) are reported
// together in an *inicfg.Error, each naming its section.key.
func ParseConfig(data []byte, defaults Config) (Config, error) {
	cfg := defaults
	problems := inicfg.Decode(data, &cfg)
	var ce *inicfg.Error
	if err := cfg.Validate(); errors.As(err, &ce) {
		problems = append(problems, ce.Problems...)
	}
	if len(problems) > 0 {
		return cfg, &inicfg.Error{Problems: problems}
	}
	return cfg, nil
}

// maxStatusTimeout is Foreman's budget for a power-status answer.
const maxStatusTimeout = 3 * time.Second

// Validate checks every value and reports all problems at once in an
// *inicfg.Error.
func (c *Config) Validate() error {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }

	s := &c.Proxy
	// An empty INI value keeps the default, so "off" turns a listener off.
	for _, addr := range []*string{&s.HTTPSListen, &s.HTTPListen, &c.M2.BootListen} {
		if strings.EqualFold(*addr, "off") {
			*addr = ""
		}
	}
	for _, kv := range [][2]string{{"smart_proxy.https_listen", s.HTTPSListen},
		{"smart_proxy.http_listen", s.HTTPListen}, {"m2.boot_listen", c.M2.BootListen}} {
		if kv[1] != "" && !validListen(kv[1]) {
			bad(kv[0], "%q is not host:port (for example :8443)", kv[1])
		}
	}
	if s.HTTPSListen == "" && s.HTTPListen == "" {
		bad("smart_proxy.https_listen", "set https_listen (or http_listen): Foreman has nothing to call")
	}
	if s.HTTPSListen != "" {
		for _, kv := range [][2]string{{"smart_proxy.ssl_certificate", s.SSLCertificate},
			{"smart_proxy.ssl_private_key", s.SSLPrivateKey}, {"smart_proxy.ssl_ca_file", s.SSLCAFile}} {
			if kv[1] == "" {
				bad(kv[0], "required for https_listen")
			}
		}
	}
	hosts := s.trustedHosts()
	if len(hosts) == 0 {
		bad("smart_proxy.trusted_hosts", "required: the CN of the tenant's Foreman client certificate")
	}
	for _, h := range hosts {
		if strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			bad("smart_proxy.trusted_hosts", "%q contains white space or control characters", h)
		}
	}
	if _, err := inicfg.ParseLogLevel(s.LogLevel); err != nil {
		bad("smart_proxy.log_level", "%v", err)
	}
	if s.LogFormat != "text" && s.LogFormat != "json" {
		bad("smart_proxy.log_format", "%q is not text or json", s.LogFormat)
	}
	if s.ShutdownTimeout <= 0 {
		bad("smart_proxy.shutdown_timeout", "must be positive")
	}

	b := &c.Broker
	if err := checkURL(b.URL); err != nil {
		bad("broker.url", "%v", err)
	}
	if b.TokenFile == "" {
		bad("broker.token_file", "required: the file holding the tenant's broker token")
	}
	if b.StatusTimeout <= 0 || b.StatusTimeout >= maxStatusTimeout {
		bad("broker.status_timeout", "%s must be above 0 and below %s, Foreman's power-status timeout", b.StatusTimeout, maxStatusTimeout)
	}
	if b.Timeout <= 0 {
		bad("broker.timeout", "must be positive")
	}

	if c.BMC.Username == "" {
		bad("bmc.username", "required: the BMC username the tenant's Foreman stores on its hosts")
	} else if strings.ContainsAny(c.BMC.Username, ":") || strings.ContainsFunc(c.BMC.Username, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		bad("bmc.username", "must not contain ':' or control characters (HTTP Basic)")
	}
	if c.BMC.PasswordFile == "" {
		bad("bmc.password_file", "required: the file holding the BMC password of the tenant's hosts")
	}
	if c.M2.BootURL != "" {
		if err := checkURL(c.M2.BootURL); err != nil {
			bad("m2.boot_url", "%v", err)
		}
	}
	if len(p) > 0 {
		return &inicfg.Error{Problems: p}
	}
	return nil
}

// trustedHosts returns the trusted_hosts entries, lowercased.
func (s ProxyConfig) trustedHosts() []string {
	var out []string
	for h := range strings.SplitSeq(s.TrustedHosts, ",") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			out = append(out, h)
		}
	}
	return out
}

func validListen(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || strings.ContainsAny(host, " /") {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

// checkURL accepts an absolute http or https URL without query or fragment.
func checkURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return errors.New("required (for example " + DefaultBrokerURL + ")")
	case err != nil:
		return fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return fmt.Errorf("%q is not an absolute http or https URL", s)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("%q must not have credentials, a query or a fragment", s)
	}
	return nil
}
