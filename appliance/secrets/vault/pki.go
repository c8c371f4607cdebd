package vault

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/malleable-cloud/malleable/appliance/pki"
)

var _ pki.Authority = (*Authority)(nil)

// Authority is pki.Authority on Vault's PKI secrets engine at
// Config.PKIMount: one root CA generated inside Vault (its key never
// leaves it), one role per tenant named tenant-<name>. It is safe for
// concurrent use.
type Authority struct {
	c     *Client
	mount string
}

// Authority returns the PKI authority. The mount, root CA and roles are
// set up on first use.
func (c *Client) Authority() *Authority {
	return &Authority{c: c, mount: c.cfg.PKIMount}
}

// RoleName is the Vault PKI role of a tenant.
func RoleName(tenant string) string { return "tenant-" + tenant }

// ttlString renders d as Vault's whole seconds.
func ttlString(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }

// Issue issues a certificate through <PKIMount>/issue/tenant-<name>,
// first allowing the request's names in that tenant's role.
func (a *Authority) Issue(ctx context.Context, req pki.Request) (pki.Certificate, error) {
	req, err := req.Normalize()
	if err != nil {
		return pki.Certificate{}, fmt.Errorf("issue certificate: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return pki.Certificate{}, fmt.Errorf("issue certificate: %w", err)
	}
	if err := a.ensure(ctx); err != nil {
		return pki.Certificate{}, err
	}
	names := slices.Clone(req.DNSNames)
	if !slices.Contains(names, req.CommonName) {
		names = append(names, req.CommonName) // an IP as CN: Vault checks it as a name too
	}
	if err := a.ensureRole(ctx, req.Tenant, names); err != nil {
		return pki.Certificate{}, err
	}
	var alt, ips []string
	for _, n := range req.DNSNames {
		if n != req.CommonName {
			alt = append(alt, n)
		}
	}
	for _, ip := range req.IPs {
		ips = append(ips, ip.String())
	}
	var sec *api.Secret
	err = a.c.call(ctx, func(ctx context.Context) (err error) {
		sec, err = a.c.api.Logical().WriteWithContext(ctx, a.mount+"/issue/"+RoleName(req.Tenant), map[string]any{
			"common_name": req.CommonName, "alt_names": strings.Join(alt, ","), "ip_sans": strings.Join(ips, ","),
			"ttl": ttlString(req.TTL), "format": "pem", "private_key_format": "pkcs8",
		})
		return err
	})
	if err != nil {
		return pki.Certificate{}, fmt.Errorf("issue certificate for tenant %s: %w", req.Tenant, err)
	}
	return certificateFrom(sec)
}

// certificateFrom reads Vault's answer to an issue request.
func certificateFrom(sec *api.Secret) (pki.Certificate, error) {
	if sec == nil {
		return pki.Certificate{}, fmt.Errorf("issue certificate: empty answer from vault")
	}
	str := func(k string) string { s, _ := sec.Data[k].(string); return s }
	certPEM, keyPEM, caPEM := str("certificate"), str("private_key"), str("issuing_ca")
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil || keyPEM == "" || caPEM == "" {
		return pki.Certificate{}, fmt.Errorf("issue certificate: vault's answer lacks the certificate, key or CA")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return pki.Certificate{}, fmt.Errorf("issue certificate: parse vault's certificate: %w", err)
	}
	serial, err := pki.NormalizeSerial(str("serial_number"))
	if err != nil {
		return pki.Certificate{}, fmt.Errorf("issue certificate: vault's serial: %w", err)
	}
	return pki.Certificate{CertPEM: withNewline(certPEM), KeyPEM: withNewline(keyPEM), CAPEM: withNewline(caPEM),
		Serial: serial, NotAfter: leaf.NotAfter}, nil
}

func withNewline(s string) []byte {
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(s)
}

// colonSerial is a canonical serial in Vault's aa:bb:cc form.
func colonSerial(s string) string {
	var parts []string
	for i := 0; i+2 <= len(s); i += 2 {
		parts = append(parts, s[i:i+2])
	}
	return strings.Join(parts, ":")
}

// Revoke revokes a serial issued by this mount; Vault rebuilds the CRL.
func (a *Authority) Revoke(ctx context.Context, serial string) error {
	s, err := pki.NormalizeSerial(serial)
	if err != nil {
		return fmt.Errorf("revoke certificate: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	if err := a.ensure(ctx); err != nil {
		return err
	}
	var sec *api.Secret
	err = a.c.call(ctx, func(ctx context.Context) (err error) {
		sec, err = a.c.api.Logical().ReadWithContext(ctx, a.mount+"/cert/"+colonSerial(s))
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	if sec == nil || sec.Data["certificate"] == nil || sec.Data["certificate"] == "" {
		return fmt.Errorf("revoke certificate %s: %w", s, pki.ErrNotFound)
	}
	err = a.c.call(ctx, func(ctx context.Context) error {
		_, err := a.c.api.Logical().WriteWithContext(ctx, a.mount+"/revoke", map[string]any{"serial_number": colonSerial(s)})
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	return nil
}

// CA returns the mount's CA certificate.
func (a *Authority) CA(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	if err := a.ensure(ctx); err != nil {
		return nil, err
	}
	var sec *api.Secret
	err := a.c.call(ctx, func(ctx context.Context) (err error) {
		sec, err = a.c.api.Logical().ReadWithContext(ctx, a.mount+"/cert/ca")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	var cert string
	if sec != nil {
		cert, _ = sec.Data["certificate"].(string)
	}
	if cert == "" {
		return nil, fmt.Errorf("read CA: %s has no CA certificate", a.mount)
	}
	return withNewline(cert), nil
}

// CRL returns the mount's PEM CRL.
func (a *Authority) CRL(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	if err := a.ensure(ctx); err != nil {
		return nil, err
	}
	var body []byte
	err := a.c.call(ctx, func(ctx context.Context) error {
		resp, err := a.c.api.Logical().ReadRawWithContext(ctx, a.mount+"/crl/pem")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := resp.Error(); err != nil {
			return err
		}
		body, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	return body, nil
}

// ensure enables the PKI mount (max TTL pki.CAValidity) and generates the
// root CA if they are missing; once per Client.
func (a *Authority) ensure(ctx context.Context) error {
	a.c.pkiMu.Lock()
	defer a.c.pkiMu.Unlock()
	if a.c.pkiReady {
		return nil
	}
	if err := a.ensureMount(ctx); err != nil {
		return fmt.Errorf("set up vault pki at %s: %w", a.mount, err)
	}
	if err := a.ensureRoot(ctx); err != nil {
		return fmt.Errorf("set up vault pki root CA at %s: %w", a.mount, err)
	}
	a.c.pkiReady = true
	return nil
}

func (a *Authority) ensureMount(ctx context.Context) error {
	var mounts map[string]*api.MountOutput
	err := a.c.call(ctx, func(ctx context.Context) (err error) {
		mounts, err = a.c.api.Sys().ListMountsWithContext(ctx)
		return err
	})
	if err != nil {
		return err
	}
	maxTTL := ttlString(pki.CAValidity)
	m, ok := mounts[a.mount+"/"]
	switch {
	case !ok:
		a.c.log.Info("vault: enabling the pki secrets engine", "mount", a.mount, "max_ttl", maxTTL)
		return a.c.call(ctx, func(ctx context.Context) error {
			return a.c.api.Sys().MountWithContext(ctx, a.mount, &api.MountInput{Type: "pki",
				Description: "Malleable appliance CA", Config: api.MountConfigInput{MaxLeaseTTL: maxTTL}})
		})
	case m.Type != "pki":
		return fmt.Errorf("mount %s is a %q engine, not pki", a.mount, m.Type)
	case time.Duration(m.Config.MaxLeaseTTL)*time.Second < pki.CAValidity:
		a.c.log.Info("vault: raising the pki mount's max TTL", "mount", a.mount, "max_ttl", maxTTL)
		return a.c.call(ctx, func(ctx context.Context) error {
			return a.c.api.Sys().TuneMountAllowNilWithContext(ctx, a.mount, api.TuneMountConfigInput{MaxLeaseTTL: &maxTTL})
		})
	}
	return nil
}

func (a *Authority) ensureRoot(ctx context.Context) error {
	var sec *api.Secret
	err := a.c.call(ctx, func(ctx context.Context) (err error) {
		sec, err = a.c.api.Logical().ListWithContext(ctx, a.mount+"/issuers")
		return err
	})
	if err != nil {
		return err
	}
	if sec != nil {
		if keys, _ := sec.Data["keys"].([]any); len(keys) > 0 {
			return nil
		}
	}
	a.c.log.Info("vault: generating the root CA", "mount", a.mount)
	return a.c.call(ctx, func(ctx context.Context) error {
		_, err := a.c.api.Logical().WriteWithContext(ctx, a.mount+"/root/generate/internal", map[string]any{
			"common_name": pki.CACommonName, "ttl": ttlString(pki.CAValidity), "key_type": "ec", "key_bits": 256,
			"issuer_name": "malleable",
		})
		return err
	})
}

// ensureRole makes the tenant's role allow names (besides those it
// allows already), writing the role only when something is new.
func (a *Authority) ensureRole(ctx context.Context, tenant string, names []string) error {
	a.c.roleMu.Lock()
	defer a.c.roleMu.Unlock()
	role := a.mount + "/roles/" + RoleName(tenant)
	allowed, cached := a.c.roles[tenant]
	if !cached {
		var sec *api.Secret
		err := a.c.call(ctx, func(ctx context.Context) (err error) {
			sec, err = a.c.api.Logical().ReadWithContext(ctx, role)
			return err
		})
		if err != nil {
			return fmt.Errorf("read vault role %s: %w", role, err)
		}
		if sec != nil {
			list, _ := sec.Data["allowed_domains"].([]any)
			for _, d := range list {
				if s, ok := d.(string); ok && s != "" {
					allowed = append(allowed, s)
				}
			}
		}
	}
	want := slices.Clone(allowed)
	for _, n := range names {
		if !slices.Contains(want, n) {
			want = append(want, n)
		}
	}
	slices.Sort(want)
	if cached && len(want) == len(allowed) {
		return nil
	}
	err := a.c.call(ctx, func(ctx context.Context) error {
		_, err := a.c.api.Logical().WriteWithContext(ctx, role, roleParams(want))
		return err
	})
	if err != nil {
		return fmt.Errorf("write vault role %s: %w", role, err)
	}
	a.c.roles[tenant] = want
	return nil
}

// roleParams is a tenant role: exactly the names the tenant was issued
// for (no subdomains, globs or wildcards), any IP SAN, server and client
// use, ECDSA P-256 keys, at most pki.MaxTTL, backdated an hour for clock
// skew like pki.Local.
func roleParams(names []string) map[string]any {
	return map[string]any{
		"allowed_domains": names, "allow_bare_domains": true, "allow_subdomains": false,
		"allow_glob_domains": false, "allow_wildcard_certificates": false, "allow_localhost": false,
		"allow_any_name": false, "enforce_hostnames": true, "allow_ip_sans": true,
		"server_flag": true, "client_flag": true, "key_type": "ec", "key_bits": 256,
		"key_usage": []string{"DigitalSignature"}, "max_ttl": ttlString(pki.MaxTTL), "ttl": ttlString(pki.DefaultTTL),
		"not_before_duration": "3600s", "require_cn": true, "no_store": false,
	}
}
