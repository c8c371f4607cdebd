package tenants

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/pki"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/smartproxy"
)

// Secrets keeps tenants' secrets (the embedded store or Vault).
type Secrets interface {
	Get(ctx context.Context, path string) ([]byte, error)
	Put(ctx context.Context, path string, value []byte) error
	Delete(ctx context.Context, path string) error
	List(ctx context.Context, prefix string) ([]string, error)
}

// PlanStore is what the plan reads and records in the appliance's store.
type PlanStore interface {
	SetTenantState(ctx context.Context, name string, state inventory.TenantState, foremanURL string) error
	SetTenantToken(ctx context.Context, tenant, hash string) error
	GetTenant(ctx context.Context, name string) (inventory.Tenant, error)
	// LeasedNodes are the nodes the tenant holds now or has leases of ahead.
	LeasedNodes(ctx context.Context, tenant string, now time.Time) ([]inventory.Node, error)
}

// BrokerListeners give each tenant's smart-proxy the appliance's broker
// and M2 API on the tenant's network, answering that tenant only.
type BrokerListeners interface {
	Listen(ctx context.Context, tenant, host string) (url string, err error)
	Close(tenant string) error
}

// LeaseEnder ends a tenant's leases now and waits until its nodes are
// handed over, returning how many leases it ended.
type LeaseEnder interface {
	EndTenantLeases(ctx context.Context, tenant string, now time.Time) (int, error)
}

// DiskRemover deletes a tenant's M2 disks and snapshots, returning how
// many it deleted.
type DiskRemover interface {
	RemoveTenantDisks(ctx context.Context, tenant string) (int, error)
}

// Plan is how tenants are onboarded and offboarded on this appliance.
type Plan struct {
	Store   PlanStore
	Runtime Runtime
	Secrets Secrets
	CA      pki.Authority
	// Foreman returns a client of a tenant's Foreman API (ForemanClient).
	Foreman func(url, user, password string) (ForemanAPI, error)
	Broker  BrokerListeners
	// TokenHash hashes a broker token as the store keeps it.
	TokenHash func(token string) string
	// Leases ends a tenant's leases and waits for the handovers; nil when
	// the appliance has no nodes to hand over.
	Leases LeaseEnder
	// Disks deletes a tenant's M2 disks and snapshots; nil without M2.
	Disks DiskRemover
	// BMCRange holds the tenant-facing BMC addresses ([nodes]
	// tenant_bmc_range): the BMC subnet of every tenant's Foreman.
	BMCRange netip.Prefix
	// Domain names tenants' containers: foreman.<tenant>.<Domain>.
	Domain string
	Log    *slog.Logger
	Now    func() time.Time
}

func (p *Plan) now() time.Time {
	if p.Now == nil {
		return time.Now().UTC()
	}
	return p.Now().UTC()
}

// The paths of a tenant's secrets, under tenants/<name>/.
const (
	secretAdminPassword = "foreman/admin-password"
	secretEncryptionKey = "foreman/encryption-key"
	secretDBPassword    = "database/password"
	// SecretBrokerToken is the smart-proxy's broker credential; a new
	// token for an onboarded tenant is written here, and drift redeploys
	// the proxy with it.
	SecretBrokerToken = "broker/token"
	secretBMCPassword = "bmc/password"
	secretProxyCert   = "certs/proxy.crt"
	secretProxyKey    = "certs/proxy.key"
	secretForemanCert = "certs/foreman.crt"
	secretForemanKey  = "certs/foreman.key"
	secretCA          = "certs/ca.crt"
	secretLoginShown  = "foreman/admin-password-shown"
)

// SecretPath is where a tenant's secret is kept.
func SecretPath(tenant, name string) string { return "tenants/" + tenant + "/" + name }

// names of a tenant's containers on its network.
func (p *Plan) foremanFQDN(tenant string) string { return "foreman." + tenant + "." + p.Domain }
func (p *Plan) proxyFQDN(tenant string) string   { return "smart-proxy." + tenant + "." + p.Domain }

// proxyPort is where a tenant's smart-proxy serves Foreman (HTTPS).
const proxyPort = "8443"

// onboarding is one run of an onboarding job; its steps share what the
// earlier ones found.
type onboarding struct {
	*Plan
	tenant string
	log    *slog.Logger
	// drift: the tenant is ready and stays so; its state is not touched.
	drift   bool
	net     Network
	broker  string
	sec     map[string][]byte
	foreman Foreman
}

func (o *onboarding) steps() []Step {
	return []Step{
		{"network", o.network},
		{"secrets", o.secrets},
		{"certificates", o.certificates},
		{"database", o.database},
		{"foreman", o.startForeman},
		{"smart-proxy", o.proxy},
		{"health", o.health},
		{"bootstrap", o.bootstrap},
	}
}

func (o *onboarding) network(ctx context.Context) (string, error) {
	if o.Runtime == nil {
		return "", errNoRuntime
	}
	n, err := o.Runtime.EnsureNetwork(ctx, o.tenant)
	if err != nil {
		return "", err
	}
	o.net = n
	if o.broker, err = o.Broker.Listen(ctx, o.tenant, n.Gateway); err != nil {
		return "", fmt.Errorf("broker on the tenant's network: %w", err)
	}
	return fmt.Sprintf("network %.12s, broker at %s", n.ID, o.broker), nil
}

// randomSecret is n random bytes as hex.
func randomSecret(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// secrets makes every secret the tenant lacks and keeps the others, so a
// Foreman made before keeps its passwords and encryption key.
func (o *onboarding) secrets(ctx context.Context) (string, error) {
	o.sec = map[string][]byte{}
	made := 0
	for _, s := range []struct {
		name string
		n    int
	}{{secretAdminPassword, 16}, {secretEncryptionKey, 16}, {secretDBPassword, 16}, {SecretBrokerToken, 32}, {secretBMCPassword, 16}} {
		path := SecretPath(o.tenant, s.name)
		v, err := o.Secrets.Get(ctx, path)
		if errors.Is(err, secrets.ErrNotFound) && o.drift {
			// A ready tenant's Foreman holds data under these: new
			// ones would lock it out (a wrong store, not a new tenant).
			return "", fmt.Errorf("secret %s of a ready tenant is missing; check the secret store's configuration: %w", path, err)
		}
		if errors.Is(err, secrets.ErrNotFound) {
			v, made = randomSecret(s.n), made+1
			err = o.Secrets.Put(ctx, path, v)
			if err == nil && s.name == secretAdminPassword {
				err = o.Secrets.Delete(ctx, SecretPath(o.tenant, secretLoginShown))
			}
		}
		if err != nil {
			return "", fmt.Errorf("secret %s: %w", path, err)
		}
		o.sec[s.name] = v
	}
	if err := o.Store.SetTenantToken(ctx, o.tenant, o.TokenHash(string(o.sec[SecretBrokerToken]))); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d secrets, %d new", len(o.sec), made), nil
}

// certRenewBefore is how long before its end a certificate is reissued.
const certRenewBefore = 30 * 24 * time.Hour

// certificates issues the proxy's server certificate and Foreman's client
// certificate, keeping valid ones.
func (o *onboarding) certificates(ctx context.Context) (string, error) {
	ca, err := o.CA.CA(ctx)
	if err != nil {
		return "", fmt.Errorf("the CA's certificate: %w", err)
	}
	issued := 0
	for _, c := range []struct {
		cert, key string
		req       pki.Request
	}{
		{secretProxyCert, secretProxyKey, pki.Request{Tenant: o.tenant, CommonName: o.proxyFQDN(o.tenant),
			DNSNames: []string{o.proxyFQDN(o.tenant)}, Usage: pki.ServerAuth}},
		{secretForemanCert, secretForemanKey, pki.Request{Tenant: o.tenant, CommonName: o.foremanFQDN(o.tenant),
			DNSNames: []string{o.foremanFQDN(o.tenant)}, Usage: pki.ClientAuth}},
	} {
		certPath, keyPath := SecretPath(o.tenant, c.cert), SecretPath(o.tenant, c.key)
		cert, err := o.Secrets.Get(ctx, certPath)
		key, kerr := o.Secrets.Get(ctx, keyPath)
		if err == nil && kerr == nil && usable(cert, key, ca, o.now().Add(certRenewBefore)) {
			o.sec[c.cert], o.sec[c.key] = cert, key
			continue
		}
		got, err := o.CA.Issue(ctx, c.req)
		if err != nil {
			return "", fmt.Errorf("issue %s: %w", c.req.CommonName, err)
		}
		if err := errors.Join(o.Secrets.Put(ctx, certPath, got.CertPEM), o.Secrets.Put(ctx, keyPath, got.KeyPEM)); err != nil {
			return "", err
		}
		o.sec[c.cert], o.sec[c.key] = got.CertPEM, got.KeyPEM
		issued++
	}
	o.sec[secretCA] = ca
	if old, err := o.Secrets.Get(ctx, SecretPath(o.tenant, secretCA)); err != nil || !bytes.Equal(old, ca) {
		if err := o.Secrets.Put(ctx, SecretPath(o.tenant, secretCA), ca); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d issued, %d kept", issued, 2-issued), nil
}

func (o *onboarding) database(ctx context.Context) (string, error) {
	if err := o.Runtime.EnsureDatabase(ctx, o.tenant, string(o.sec[secretDBPassword])); err != nil {
		return "", err
	}
	return "database t_" + strings.ReplaceAll(o.tenant, "-", "_"), nil
}

// foremanPort is where the tenant's Foreman answers on the appliance's
// loopback: the port of the URL recorded at its first start, else a free
// one, recorded before the container is made, so that the URL given to its
// users outlives every restart or replacement of the container.
func (o *onboarding) foremanPort(ctx context.Context) (int, error) {
	t, err := o.Store.GetTenant(ctx, o.tenant)
	if err != nil {
		return 0, err
	}
	if u, err := url.Parse(t.ForemanURL); err == nil && u.Hostname() == "127.0.0.1" {
		if p, err := strconv.Atoi(u.Port()); err == nil && p > 0 {
			return p, nil
		}
	}
	if o.drift {
		return 0, fmt.Errorf("ready tenant %s has no Foreman URL recorded", o.tenant)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a port for Foreman: %w", err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p, o.Store.SetTenantState(ctx, o.tenant, inventory.TenantOnboarding, fmt.Sprintf("http://127.0.0.1:%d", p))
}

func (o *onboarding) startForeman(ctx context.Context) (string, error) {
	port, err := o.foremanPort(ctx)
	if err != nil {
		return "", err
	}
	f, err := o.Runtime.EnsureForeman(ctx, ForemanSpec{Tenant: o.tenant, NetworkID: o.net.ID, HostPort: port,
		DBPassword: string(o.sec[secretDBPassword]), EncryptionKey: string(o.sec[secretEncryptionKey]),
		FQDN: o.foremanFQDN(o.tenant), ClientCert: o.sec[secretForemanCert], ClientKey: o.sec[secretForemanKey],
		ProxyCA: o.sec[secretCA]})
	if err != nil {
		return "", err
	}
	o.foreman = f
	if !o.drift {
		if err := o.Store.SetTenantState(ctx, o.tenant, inventory.TenantOnboarding, f.PublicURL); err != nil {
			return "", err
		}
	}
	return "Foreman at " + f.PublicURL, nil
}

func (o *onboarding) proxy(ctx context.Context) (string, error) {
	// The INI's header names its time: the certificate's, so that the
	// same proxy makes the same files and drift leaves it running.
	issued, err := notBefore(o.sec[secretProxyCert])
	if err != nil {
		return "", err
	}
	ini, err := smartproxy.INI(smartproxy.InitSpec{Dir: ProxyDir, Tenant: o.tenant, BrokerURL: o.broker,
		BrokerToken: string(o.sec[SecretBrokerToken]), Listen: ":" + proxyPort, Hosts: []string{o.proxyFQDN(o.tenant)},
		ForemanCN: o.foremanFQDN(o.tenant), Now: issued})
	if err != nil {
		return "", err
	}
	files := map[string][]byte{
		"smart-proxy.ini": ini,
		"broker.token":    append(o.sec[SecretBrokerToken], '\n'),
		"bmc.password":    append(o.sec[secretBMCPassword], '\n'),
		"ca.crt":          o.sec[secretCA],
		"proxy.crt":       o.sec[secretProxyCert],
		"proxy.key":       o.sec[secretProxyKey],
	}
	if err := o.Runtime.EnsureProxy(ctx, ProxySpec{Tenant: o.tenant, NetworkID: o.net.ID, Alias: o.proxyFQDN(o.tenant), Files: files}); err != nil {
		return "", err
	}
	return "smart-proxy " + o.proxyFQDN(o.tenant) + ":" + proxyPort, nil
}

func (o *onboarding) health(ctx context.Context) (string, error) {
	start := time.Now()
	if err := o.Runtime.WaitHealthy(ctx, o.tenant); err != nil {
		return "", err
	}
	return fmt.Sprintf("healthy after %s", time.Since(start).Round(time.Second)), nil
}
