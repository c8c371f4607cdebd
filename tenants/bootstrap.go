package tenants

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/templates"
)

// Host is a node as its tenant's Foreman holds it: its MAC and its IPMI
// BMC interface at the node's tenant-facing address, with the smart-proxy's
// virtual credentials, in the BMC subnet.
type Host struct {
	Name, MAC            string
	BMCAddress           netip.Addr
	BMCUser, BMCPassword string
}

// ForemanAPI is what onboarding asks of a tenant's Foreman
// (appliance/foreman). Every call is idempotent.
type ForemanAPI interface {
	WaitReady(ctx context.Context) error
	// Personalise sets the tenant's own administrator password and its
	// organisation and location on a Foreman made from the template; it
	// may already have been done.
	Personalise(ctx context.Context, seedUser, seedPassword, password, org, loc string) error
	RegisterProxy(ctx context.Context, name, url, org, loc string) error
	EnsureBMCSubnet(ctx context.Context, name string, network netip.Prefix, proxy, org, loc string) error
	EnsureHost(ctx context.Context, h Host, subnet, org, loc string) error
	RemoveHost(ctx context.Context, name string) error
	EnsureTemplate(ctx context.Context, name, body, org, loc string) error
}

// The organisation and location a tenant's Foreman is set up with.
const (
	TenantLocation = "Malleable"
	templateName   = "Malleable M2 SAN boot"
	bmcSubnetName  = "malleable-bmc"
	adminUser      = "admin"
)

// proxyName is the smart-proxy's name in its tenant's Foreman.
func proxyName(tenant string) string { return "malleable-" + tenant }

// bootstrap makes the tenant's Foreman its own and ready: its password,
// organisation and location, the smart-proxy registered over mTLS, the
// BMC subnet through that proxy, the SAN-boot template, and a host for
// every node the tenant holds or has leased ahead.
func (o *onboarding) bootstrap(ctx context.Context) (string, error) {
	password := string(o.sec[secretAdminPassword])
	fc, err := o.Foreman(o.foreman.URL, adminUser, password)
	if err != nil {
		return "", err
	}
	if err := fc.WaitReady(ctx); err != nil {
		return "", err
	}
	org, loc := o.tenant, TenantLocation
	if err := fc.Personalise(ctx, o.foreman.SeedUser, o.foreman.SeedPassword, password, org, loc); err != nil {
		return "", fmt.Errorf("personalise Foreman: %w", err)
	}
	proxy := proxyName(o.tenant)
	if err := fc.RegisterProxy(ctx, proxy, "https://"+o.proxyFQDN(o.tenant)+":"+proxyPort, org, loc); err != nil {
		return "", fmt.Errorf("register the smart-proxy: %w", err)
	}
	if err := fc.EnsureBMCSubnet(ctx, bmcSubnetName, o.BMCRange, proxy, org, loc); err != nil {
		return "", fmt.Errorf("BMC subnet: %w", err)
	}
	if err := fc.EnsureTemplate(ctx, templateName, templates.ForemanSANBoot(), org, loc); err != nil {
		return "", fmt.Errorf("SAN-boot template: %w", err)
	}
	nodes, err := o.Store.LeasedNodes(ctx, o.tenant, o.now())
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		h, err := o.host(n)
		if err == nil {
			err = fc.EnsureHost(ctx, h, bmcSubnetName, org, loc)
		}
		if err != nil {
			return "", fmt.Errorf("host %s: %w", n.Name, err)
		}
	}
	return fmt.Sprintf("smart-proxy %s registered, %d hosts", proxy, len(nodes)), nil
}

// host is node as the tenant's Foreman holds it.
func (o *onboarding) host(n inventory.Node) (Host, error) {
	addr, err := netip.ParseAddr(n.TenantBMCAddress)
	if err != nil {
		return Host{}, fmt.Errorf("tenant-facing BMC address %q: %w", n.TenantBMCAddress, err)
	}
	mac := ""
	if len(n.MACs) > 0 {
		mac = n.MACs[0]
	}
	return Host{Name: n.Name, MAC: mac, BMCAddress: addr, BMCUser: o.tenant, BMCPassword: string(o.sec[secretBMCPassword])}, nil
}

// usable reports whether a PEM certificate and key kept from an earlier
// run still serve: they match, the CA now in use signed the certificate,
// and it is still valid at t.
func usable(certPEM, keyPEM, caPEM []byte, t time.Time) bool {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || !t.Before(c.NotAfter) {
		return false
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return false
	}
	_, err = c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: t.Add(-certRenewBefore)})
	return err == nil
}

// notBefore is a PEM certificate's start.
func notBefore(certPEM []byte) (time.Time, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return time.Time{}, errors.New("not a PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return time.Time{}, err
	}
	return c.NotBefore, nil
}

// serialOf is a PEM certificate's serial as the CA names it.
func serialOf(certPEM []byte) (string, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return "", errors.New("not a PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", err
	}
	return strings.ToLower(c.SerialNumber.Text(16)), nil
}

// offboarding is one run of an offboarding job.
type offboarding struct {
	*Plan
	tenant string
	opts   inventory.OffboardOptions
}

func (o *offboarding) steps() []Step {
	return []Step{
		{"leases", o.leases},
		{"smart-proxy", func(ctx context.Context) (string, error) {
			// Its broker credential stops working with it.
			return "removed, credential revoked", errors.Join(o.Runtime.RemoveProxy(ctx, o.tenant), o.Broker.Close(o.tenant),
				o.Store.SetTenantToken(ctx, o.tenant, ""))
		}},
		{"foreman", func(ctx context.Context) (string, error) { return "removed", o.Runtime.RemoveForeman(ctx, o.tenant) }},
		{"database", func(ctx context.Context) (string, error) { return "dropped", o.Runtime.DropDatabase(ctx, o.tenant) }},
		{"network", func(ctx context.Context) (string, error) { return "removed", o.Runtime.RemoveNetwork(ctx, o.tenant) }},
		{"certificates", o.revoke},
		{"disks", o.disks},
		{"secrets", o.secrets},
	}
}

// leases ends the tenant's leases now; the reconciler hands its nodes over.
func (o *offboarding) leases(ctx context.Context) (string, error) {
	if o.Leases == nil {
		return "no leases to end", nil
	}
	n, err := o.Leases.EndTenantLeases(ctx, o.tenant, o.now())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d leases ended", n), nil
}

func (o *offboarding) revoke(ctx context.Context) (string, error) {
	revoked := 0
	for _, name := range []string{secretProxyCert, secretForemanCert} {
		cert, err := o.Secrets.Get(ctx, SecretPath(o.tenant, name))
		if errors.Is(err, secrets.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		serial, err := serialOf(cert)
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		if err := o.CA.Revoke(ctx, serial); err != nil {
			return "", fmt.Errorf("revoke %s: %w", name, err)
		}
		if err := o.Secrets.Delete(ctx, SecretPath(o.tenant, name)); err != nil {
			return "", err
		}
		revoked++
	}
	return fmt.Sprintf("%d revoked", revoked), nil
}

func (o *offboarding) disks(ctx context.Context) (string, error) {
	if o.Disks == nil {
		return "no M2 storage here", nil
	}
	if o.opts.KeepDisks {
		return "kept", nil
	}
	n, err := o.Disks.RemoveTenantDisks(ctx, o.tenant)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d deleted", n), nil
}

func (o *offboarding) secrets(ctx context.Context) (string, error) {
	if o.opts.KeepSecrets {
		return "kept", nil
	}
	paths, err := o.Secrets.List(ctx, "tenants/"+o.tenant+"/")
	if err != nil {
		return "", err
	}
	for _, p := range paths {
		if err := o.Secrets.Delete(ctx, p); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d deleted", len(paths)), nil
}
