// Package pki is the appliance's certificate authority contract: Authority
// issues short-lived certificates for tenants' smart-proxies and Foremans,
// revokes them and publishes the CA certificate and CRL. Local is the
// embedded implementation, keeping its CA in a secret store; the Vault PKI
// secrets engine implements the same contract in appliance/secrets/vault.
// The suite in pkitest checks every implementation.
//
// This package imports nothing of Vault.
package pki

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Usage says what an issued certificate is for: the extended key usage it
// carries.
type Usage int

const (
	// ServerAuth is a TLS server certificate (a smart-proxy's).
	ServerAuth Usage = iota + 1
	// ClientAuth is a TLS client certificate (a tenant's Foreman calling
	// its proxy, or a proxy calling the broker).
	ClientAuth
)

// String names u for errors and logs.
func (u Usage) String() string {
	switch u {
	case ServerAuth:
		return "server"
	case ClientAuth:
		return "client"
	}
	return fmt.Sprintf("usage(%d)", int(u))
}

// MaxTTL is the longest validity Issue grants: 825 days, the longest a
// publicly trusted TLS certificate could have, which is what
// `smart-proxy init` has always issued.
const MaxTTL = 825 * 24 * time.Hour

// DefaultTTL is the validity of a certificate whose Request.TTL is zero.
const DefaultTTL = 90 * 24 * time.Hour

// CAValidity is how long a CA certificate made by an implementation lasts:
// ten years, longer than any certificate it signs.
const CAValidity = 10 * 365 * 24 * time.Hour

// Sentinel errors of the contract; match them with errors.Is.
var (
	// ErrInvalidRequest means a request or serial broke the rules below;
	// nothing was issued or changed. It wraps the reason.
	ErrInvalidRequest = errors.New("invalid certificate request")
	// ErrNotFound means no certificate with that serial was issued here.
	ErrNotFound = errors.New("certificate not found")
)

// Request asks for one certificate.
type Request struct {
	// Tenant owns the certificate: [a-z][a-z0-9-]{0,30}.
	Tenant string
	// CommonName is the subject's CN: a hostname or an IP address. It is
	// also put among the SANs, as Vault does.
	CommonName string
	// DNSNames are extra DNS SANs, each a hostname (no wildcards).
	DNSNames []string
	// IPs are IP SANs.
	IPs []net.IP
	// Usage is ServerAuth or ClientAuth.
	Usage Usage
	// TTL is the validity, at most MaxTTL; zero means DefaultTTL.
	TTL time.Duration
}

// Certificate is an issued certificate with its new private key.
type Certificate struct {
	// CertPEM is the leaf certificate.
	CertPEM []byte
	// KeyPEM is its ECDSA P-256 private key (PKCS #8, "PRIVATE KEY").
	KeyPEM []byte
	// CAPEM is the CA certificate that signed it.
	CAPEM []byte
	// Serial is the certificate's serial number in lower-case hex without
	// colons: the big-endian bytes of the serial, as Vault shows them.
	Serial string
	// NotAfter is when the certificate expires.
	NotAfter time.Time
}

// Authority issues and revokes certificates. Implementations are safe for
// concurrent use, and every method honours ctx.
type Authority interface {
	// Issue makes a new ECDSA P-256 key and a certificate for it signed
	// by the CA. An invalid request is ErrInvalidRequest and issues
	// nothing.
	Issue(ctx context.Context, req Request) (Certificate, error)
	// Revoke revokes the certificate with that serial (as in
	// Certificate.Serial; colons and upper case are accepted). An unknown
	// serial is ErrNotFound; revoking a revoked certificate again is not
	// an error.
	Revoke(ctx context.Context, serial string) error
	// CA returns the PEM CA certificate.
	CA(ctx context.Context) ([]byte, error)
	// CRL returns the PEM certificate revocation list, signed by the CA,
	// listing every revoked serial.
	CRL(ctx context.Context) ([]byte, error)
}

// Normalize checks r and returns it in canonical form: names lower-cased,
// TTL defaulted, the common name first among the SANs and duplicates
// dropped. Errors wrap ErrInvalidRequest and name the bad field.
func (r Request) Normalize() (Request, error) {
	if err := ValidateTenant(r.Tenant); err != nil {
		return r, err
	}
	switch {
	case r.Usage != ServerAuth && r.Usage != ClientAuth:
		return r, fmt.Errorf("%w: usage %d is neither server nor client", ErrInvalidRequest, int(r.Usage))
	case r.TTL < 0:
		return r, fmt.Errorf("%w: negative TTL %s", ErrInvalidRequest, r.TTL)
	case r.TTL > MaxTTL:
		return r, fmt.Errorf("%w: TTL %s is beyond the maximum %s", ErrInvalidRequest, r.TTL, MaxTTL)
	case r.TTL == 0:
		r.TTL = DefaultTTL
	}
	out := Request{Tenant: r.Tenant, Usage: r.Usage, TTL: r.TTL}
	cn := strings.ToLower(r.CommonName)
	if cn == "" {
		return r, fmt.Errorf("%w: empty common name", ErrInvalidRequest)
	}
	if ip := net.ParseIP(cn); ip != nil {
		out.CommonName = ip.String()
		out.IPs = append(out.IPs, ip)
	} else if err := validateHostname(cn); err != nil {
		return r, fmt.Errorf("%w: common name: %w", ErrInvalidRequest, err)
	} else {
		out.CommonName = cn
		out.DNSNames = append(out.DNSNames, cn)
	}
	for _, n := range r.DNSNames {
		n = strings.ToLower(n)
		if err := validateHostname(n); err != nil {
			return r, fmt.Errorf("%w: DNS name: %w", ErrInvalidRequest, err)
		}
		if !slices.Contains(out.DNSNames, n) {
			out.DNSNames = append(out.DNSNames, n)
		}
	}
	for _, ip := range r.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return r, fmt.Errorf("%w: IP address of %d bytes", ErrInvalidRequest, len(ip))
		}
		if !slices.ContainsFunc(out.IPs, ip.Equal) {
			out.IPs = append(out.IPs, ip)
		}
	}
	return out, nil
}

// ValidateTenant reports whether name is a tenant name:
// [a-z][a-z0-9-]{0,30}. The error wraps ErrInvalidRequest.
func ValidateTenant(name string) error {
	if name == "" || len(name) > 31 {
		return fmt.Errorf("%w: tenant name must be 1-31 characters, got %d", ErrInvalidRequest, len(name))
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || i > 0 && (r >= '0' && r <= '9' || r == '-')
		if !ok {
			return fmt.Errorf("%w: tenant name %q: character %d not allowed ([a-z][a-z0-9-]*)", ErrInvalidRequest, name, i+1)
		}
	}
	return nil
}

// NormalizeSerial returns serial in canonical form (lower-case hex, no
// colons or hyphens), or an error wrapping ErrInvalidRequest.
func NormalizeSerial(serial string) (string, error) {
	s := strings.ToLower(strings.NewReplacer(":", "", "-", "").Replace(serial))
	if s == "" || len(s) > 64 {
		return "", fmt.Errorf("%w: serial must be 1-64 hex digits", ErrInvalidRequest)
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return "", fmt.Errorf("%w: serial %q is not hexadecimal", ErrInvalidRequest, serial)
		}
	}
	if len(s)%2 == 1 {
		s = "0" + s
	}
	for len(s) > 2 && strings.HasPrefix(s, "00") {
		s = s[2:] // a serial's bytes never start with a zero byte
	}
	return s, nil
}

// validateHostname accepts a DNS hostname: dot-separated labels of 1-63
// characters [a-z0-9-], not starting or ending with '-', 253 characters at
// most. Wildcards and trailing dots are refused.
func validateHostname(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("%q: must be 1-253 characters", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q: labels must be 1-63 characters", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q: a label starts or ends with '-'", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("%q: character %q is not allowed in a hostname", h, r)
			}
		}
	}
	return nil
}
