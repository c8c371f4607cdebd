package smartproxy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/pki"
	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// InitSpec is what `malleable smart-proxy init` writes a ready proxy
// directory from.
type InitSpec struct {
	// Dir receives every file; created with mode 0700.
	Dir string
	// Tenant names the tenant; it is also the virtual BMC username.
	Tenant string
	// BrokerURL is the appliance's URL as the proxy reaches it.
	BrokerURL string
	// BrokerToken is the tenant's broker token (written 0600, never shown).
	BrokerToken string
	// Listen is the HTTPS address Foreman calls (host:port).
	Listen string
	// Hosts are the names and addresses Foreman calls the proxy by: the
	// server certificate's SANs.
	Hosts []string
	// ForemanCN is the CN of the client certificate issued to the tenant's
	// Foreman, and the proxy's only trusted host.
	ForemanCN string
	// Force overwrites existing files.
	Force bool
	// Now is the certificates' start.
	Now time.Time
}

// InitFiles are the files WriteInit writes, in Dir.
var InitFiles = []string{"smartproxy.ini", "broker.token", "bmc.password", "ca.crt",
	"proxy.crt", "proxy.key", "foreman.crt", "foreman.key"}

// ErrExists is returned by WriteInit when a file it would write exists.
var ErrExists = errors.New("file exists")

// certValidity is the validity of the certificates init issues.
const certValidity = pki.MaxTTL

// WriteInit writes a ready smart-proxy directory: the INI, the tenant's
// broker token and a fresh virtual BMC password (0600), a CA (its key is
// not kept), the proxy's server certificate for spec.Hosts and a client
// certificate for the tenant's Foreman, both signed by that CA (keys
// 0600). It refuses to overwrite a file unless spec.Force. The returned
// config is the written INI's.
func WriteInit(spec InitSpec) (Config, error) {
	cfg, err := initConfig(spec)
	if err != nil {
		return cfg, err
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return cfg, err
	}
	// It holds the proxy's keys and the tenant's token: an existing
	// directory others can enter is made private too.
	if err := os.Chmod(spec.Dir, 0o700); err != nil {
		return cfg, err
	}
	if !spec.Force {
		if err := InitDirFree(spec.Dir); err != nil {
			return cfg, err
		}
	}
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return cfg, err
	}
	files, err := issueTLS(spec)
	if err != nil {
		return cfg, err
	}
	files["broker.token"] = modeFile{[]byte(spec.BrokerToken + "\n"), 0o600}
	files["bmc.password"] = modeFile{[]byte(base64.RawURLEncoding.EncodeToString(pw) + "\n"), 0o600}
	files["smartproxy.ini"] = modeFile{renderINI(cfg, spec), 0o600}
	for _, name := range InitFiles {
		if err := writeAtomic(filepath.Join(spec.Dir, name), files[name]); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// INI returns the smartproxy.ini WriteInit would write for spec, naming
// its files in spec.Dir, without writing anything: what onboarding mounts
// into a tenant's smart-proxy container beside the files it issues itself.
func INI(spec InitSpec) ([]byte, error) {
	cfg, err := initConfig(spec)
	if err != nil {
		return nil, err
	}
	return renderINI(cfg, spec), nil
}

// InitDirFree returns an error wrapping ErrExists if a file WriteInit
// writes is already in dir.
func InitDirFree(dir string) error {
	for _, name := range InitFiles {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%s: %w (pass --force to replace every file init writes)", filepath.Join(dir, name), ErrExists)
		}
	}
	return nil
}

// initConfig is the configuration WriteInit writes, validated.
func initConfig(spec InitSpec) (Config, error) {
	abs, err := filepath.Abs(spec.Dir)
	if err != nil {
		return Config{}, err
	}
	in := func(name string) string { return filepath.Join(abs, name) }
	cfg := DefaultConfig()
	cfg.Proxy.HTTPSListen = spec.Listen
	cfg.Proxy.SSLCertificate, cfg.Proxy.SSLPrivateKey, cfg.Proxy.SSLCAFile = in("proxy.crt"), in("proxy.key"), in("ca.crt")
	cfg.Proxy.TrustedHosts = strings.ToLower(spec.ForemanCN)
	cfg.Broker.URL = spec.BrokerURL
	cfg.Broker.TokenFile = in("broker.token")
	cfg.BMC.Username = spec.Tenant
	cfg.BMC.PasswordFile = in("bmc.password")
	if len(spec.Hosts) == 0 {
		return cfg, errors.New("no host to name in the proxy's certificate (--host)")
	}
	if strings.TrimSpace(spec.BrokerToken) == "" {
		return cfg, errors.New("no broker token")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func renderINI(cfg Config, spec InitSpec) []byte {
	return fmt.Appendf(nil, `# Written by malleable smart-proxy init for tenant %[1]s on %[2]s.
# Give the tenant's Foreman ca.crt (its ssl_ca_file), foreman.crt and
# foreman.key (its ssl_certificate and ssl_priv_key); register this proxy in
# it as https://%[3]s. Check with `+"`malleable smart-proxy config check`"+`.

[smart_proxy]
https_listen = %[4]s
ssl_certificate = %[5]s
ssl_private_key = %[6]s
ssl_ca_file = %[7]s
# CN of the tenant's Foreman client certificate (foreman.crt).
trusted_hosts = %[8]s
log_level = info

[broker]
url = %[9]s
token_file = %[10]s

[bmc]
# The virtual BMC identity the tenant's Foreman stores on its hosts.
username = %[11]s
password_file = %[12]s
`, spec.Tenant, spec.Now.UTC().Format(time.RFC3339), net.JoinHostPort(spec.Hosts[0], portOf(cfg.Proxy.HTTPSListen)),
		cfg.Proxy.HTTPSListen, cfg.Proxy.SSLCertificate, cfg.Proxy.SSLPrivateKey, cfg.Proxy.SSLCAFile,
		cfg.Proxy.TrustedHosts, cfg.Broker.URL, cfg.Broker.TokenFile, cfg.BMC.Username, cfg.BMC.PasswordFile)
}

func portOf(listen string) string {
	_, port, _ := net.SplitHostPort(listen)
	return port
}

// modeFile is a file's content and mode.
type modeFile struct {
	data []byte
	mode fs.FileMode
}

// writeAtomic writes f beside path with its mode from the start, then
// renames it into place: a secret is never readable by others, even
// briefly.
func writeAtomic(path string, f modeFile) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(f.mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(f.data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// issueTLS makes a CA and the two certificates it signs, with pki.Local
// over a store in memory: the CA's key is dropped with it.
func issueTLS(spec InitSpec) (map[string]modeFile, error) {
	// The store is in memory: nothing here waits on I/O.
	ctx := context.Background()
	ca := pki.NewLocal(secrets.NewMemory(), func() time.Time { return spec.Now })
	server := pki.Request{Tenant: spec.Tenant, CommonName: spec.Hosts[0], Usage: pki.ServerAuth, TTL: certValidity}
	for _, h := range spec.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPs = append(server.IPs, ip)
		} else {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	client := pki.Request{Tenant: spec.Tenant, CommonName: strings.ToLower(spec.ForemanCN), Usage: pki.ClientAuth, TTL: certValidity}
	caPEM, err := ca.CA(ctx)
	if err != nil {
		return nil, fmt.Errorf("make the CA: %w", err)
	}
	out := map[string]modeFile{"ca.crt": {caPEM, 0o644}}
	for name, req := range map[string]pki.Request{"proxy": server, "foreman": client} {
		c, err := ca.Issue(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("issue %s's certificate: %w", name, err)
		}
		out[name+".crt"] = modeFile{c.CertPEM, 0o644}
		out[name+".key"] = modeFile{c.KeyPEM, 0o600}
	}
	return out, nil
}
