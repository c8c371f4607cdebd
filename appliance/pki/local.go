package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/appliance/secrets"
)

var _ Authority = (*Local)(nil)

// SecretStore is the part of a secrets.Store Local needs (the embedded
// FileStore, Memory and Vault's KV store all have it). Get must answer an
// absent path with an error wrapping secrets.ErrNotFound.
type SecretStore interface {
	Get(ctx context.Context, path string) ([]byte, error)
	Put(ctx context.Context, path string, value []byte) error
}

// Where Local keeps its state in the SecretStore.
const (
	pathCAKey   = "pki/ca/key"
	pathCACert  = "pki/ca/cert"
	pathCRL     = "pki/crl"
	pathIssued  = "pki/issued/"
	pathRevoked = "pki/revoked/"
)

// backdate is how far before "now" certificates start: clocks of the
// appliance, proxies and Foremans may disagree.
const backdate = time.Hour

// crlValidity is how long a CRL is valid; CRL re-signs it when half of
// that has passed.
const crlValidity = 7 * 24 * time.Hour

// Local is the embedded Authority: an ECDSA P-256 CA whose key and
// certificate are made on first use and kept in a secret store, as is a
// record of every issued and revoked serial. It is safe for concurrent use
// within one process; two processes must not share a store.
type Local struct {
	store SecretStore
	now   func() time.Time

	mu     sync.Mutex // guards ca, and serialises writes of records and the CRL
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
}

// NewLocal returns a Local keeping its state in store, with now as its
// clock. Nothing is read or written until the first call.
func NewLocal(store SecretStore, now func() time.Time) *Local {
	return &Local{store: store, now: now}
}

// notFound reports whether err from the store means "absent".
func notFound(err error) bool { return errors.Is(err, secrets.ErrNotFound) }

// issuedRecord is what Local keeps under pki/issued/<serial>.
type issuedRecord struct {
	Tenant     string    `json:"tenant"`
	CommonName string    `json:"common_name"`
	Usage      string    `json:"usage"`
	NotAfter   time.Time `json:"not_after"`
}

// revokedRecord is what Local keeps under pki/revoked/<serial>.
type revokedRecord struct {
	RevokedAt time.Time `json:"revoked_at"`
}

// Issue makes a new key and a certificate for req, signed by the CA.
func (l *Local) Issue(ctx context.Context, req Request) (Certificate, error) {
	req, err := req.Normalize()
	if err != nil {
		return Certificate{}, fmt.Errorf("issue certificate: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Certificate{}, fmt.Errorf("issue certificate: %w", err)
	}
	caCert, caKey, caPEM, err := l.ca(ctx)
	if err != nil {
		return Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Certificate{}, fmt.Errorf("issue certificate: generate key: %w", err)
	}
	// Certificates hold whole seconds; NotAfter must match what is signed.
	now := l.now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: req.CommonName},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(req.TTL),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		DNSNames:    req.DNSNames,
		IPAddresses: req.IPs,
	}
	if tmpl.NotAfter.After(caCert.NotAfter) {
		return Certificate{}, fmt.Errorf("issue certificate: %w: TTL %s outlives the CA (until %s)",
			ErrInvalidRequest, req.TTL, caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if req.Usage == ClientAuth {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, serial, err := l.signUnique(ctx, tmpl, caCert, &key.PublicKey, caKey, req)
	if err != nil {
		return Certificate{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Certificate{}, fmt.Errorf("issue certificate: %w", err)
	}
	return Certificate{
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		CAPEM:    append([]byte(nil), caPEM...),
		Serial:   serial,
		NotAfter: tmpl.NotAfter,
	}, nil
}

// signUnique picks a random serial not issued before, records it, and
// signs tmpl with it. The record is written before the certificate is
// returned, so every certificate handed out can be revoked.
func (l *Local) signUnique(ctx context.Context, tmpl, caCert *x509.Certificate, pub *ecdsa.PublicKey,
	caKey *ecdsa.PrivateKey, req Request) ([]byte, string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for range 3 {
		n, err := randomSerial()
		if err != nil {
			return nil, "", fmt.Errorf("issue certificate: %w", err)
		}
		serial := hex.EncodeToString(n.Bytes())
		if _, err := l.store.Get(ctx, pathIssued+serial); err == nil {
			continue // taken, however unlikely
		} else if !notFound(err) {
			return nil, "", fmt.Errorf("issue certificate: %w", err)
		}
		tmpl.SerialNumber = n
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
		if err != nil {
			return nil, "", fmt.Errorf("issue certificate: sign: %w", err)
		}
		rec, _ := json.Marshal(issuedRecord{Tenant: req.Tenant, CommonName: req.CommonName,
			Usage: req.Usage.String(), NotAfter: tmpl.NotAfter.UTC()})
		if err := l.store.Put(ctx, pathIssued+serial, rec); err != nil {
			return nil, "", fmt.Errorf("issue certificate: record serial %s: %w", serial, err)
		}
		return der, serial, nil
	}
	return nil, "", errors.New("issue certificate: no free serial after 3 tries")
}

// randomSerial is a positive 127-bit random number: RFC 5280 wants at most
// 20 octets and CAs at least 64 random bits.
func randomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// Revoke records serial as revoked and adds it to the CRL.
func (l *Local) Revoke(ctx context.Context, serial string) error {
	s, err := NormalizeSerial(serial)
	if err != nil {
		return fmt.Errorf("revoke certificate: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	if _, err := l.store.Get(ctx, pathIssued+s); notFound(err) {
		return fmt.Errorf("revoke certificate %s: %w", s, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	caCert, caKey, _, err := l.ca(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	at := l.now().UTC()
	if b, err := l.store.Get(ctx, pathRevoked+s); err == nil {
		var rec revokedRecord
		if json.Unmarshal(b, &rec) == nil && !rec.RevokedAt.IsZero() {
			at = rec.RevokedAt
		}
	} else if !notFound(err) {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	// The CRL first, then the record: after a crash in between, a second
	// Revoke finds the serial in the CRL and writes the record.
	crl, err := l.loadCRL(ctx, caCert)
	if err != nil {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	if !crl.has(s) {
		n, _ := new(big.Int).SetString(s, 16)
		crl.entries = append(crl.entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: at})
		if err := l.signCRL(ctx, crl, caCert, caKey); err != nil {
			return fmt.Errorf("revoke certificate %s: %w", s, err)
		}
	}
	rec, _ := json.Marshal(revokedRecord{RevokedAt: at})
	if err := l.store.Put(ctx, pathRevoked+s, rec); err != nil {
		return fmt.Errorf("revoke certificate %s: %w", s, err)
	}
	return nil
}

// CA returns the PEM CA certificate, making the CA on first use.
func (l *Local) CA(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	_, _, caPEM, err := l.ca(ctx)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), caPEM...), nil
}

// CRL returns the PEM CRL, re-signed when half its validity has passed.
func (l *Local) CRL(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	caCert, caKey, _, err := l.ca(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	crl, err := l.loadCRL(ctx, caCert)
	if err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	if crl.pem == nil || l.now().After(crl.thisUpdate.Add(crlValidity/2)) {
		if err := l.signCRL(ctx, crl, caCert, caKey); err != nil {
			return nil, fmt.Errorf("read CRL: %w", err)
		}
	}
	return append([]byte(nil), crl.pem...), nil
}
