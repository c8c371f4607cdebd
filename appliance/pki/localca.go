package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ErrCorrupt means the CA or CRL kept in the secret store cannot be used
// (unparsable, or a key that does not match its certificate). Local never
// replaces them silently.
var ErrCorrupt = errors.New("stored CA state is unusable")

// CACommonName is the subject CN of the CA Local makes.
const CACommonName = "Malleable CA"

// ca returns the CA, loading it from the store or making it on first use.
func (l *Local) ca(ctx context.Context) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.caCert != nil {
		return l.caCert, l.caKey, l.caPEM, nil
	}
	certPEM, err := l.store.Get(ctx, pathCACert)
	if notFound(err) {
		certPEM, err = l.makeCA(ctx)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load CA: %w", err)
	}
	keyPEM, err := l.store.Get(ctx, pathCAKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load CA key: %w", err)
	}
	cert, key, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load CA: %w", err)
	}
	l.caCert, l.caKey, l.caPEM = cert, key, certPEM
	return cert, key, certPEM, nil
}

// makeCA makes a CA and stores it, key first: a key without a certificate
// (a crash in between) is simply replaced next time, since nothing it
// signed was ever handed out.
func (l *Local) makeCA(ctx context.Context) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := l.now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: CACommonName},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(CAValidity),
		IsCA:         true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make CA: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := l.store.Put(ctx, pathCAKey, keyPEM); err != nil {
		return nil, fmt.Errorf("store CA key: %w", err)
	}
	if err := l.store.Put(ctx, pathCACert, certPEM); err != nil {
		return nil, fmt.Errorf("store CA certificate: %w", err)
	}
	return certPEM, nil
}

// parseCA parses the stored CA and checks that key and certificate match.
func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%w: not PEM", ErrCorrupt)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) || !cert.IsCA {
		return nil, nil, fmt.Errorf("%w: key and certificate do not match", ErrCorrupt)
	}
	return cert, key, nil
}

// crlState is the stored CRL, parsed.
type crlState struct {
	pem        []byte // nil before the first CRL
	number     *big.Int
	thisUpdate time.Time
	entries    []x509.RevocationListEntry
}

func (c *crlState) has(serial string) bool {
	for _, e := range c.entries {
		if hex.EncodeToString(e.SerialNumber.Bytes()) == serial {
			return true
		}
	}
	return false
}

// loadCRL reads the stored CRL; none yet is an empty state. Call with l.mu
// held.
func (l *Local) loadCRL(ctx context.Context, caCert *x509.Certificate) (*crlState, error) {
	b, err := l.store.Get(ctx, pathCRL)
	if notFound(err) {
		return &crlState{number: big.NewInt(0)}, nil
	} else if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: CRL is not PEM", ErrCorrupt)
	}
	rl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := rl.CheckSignatureFrom(caCert); err != nil {
		return nil, fmt.Errorf("%w: CRL not signed by the CA: %w", ErrCorrupt, err)
	}
	return &crlState{pem: b, number: rl.Number, thisUpdate: rl.ThisUpdate, entries: rl.RevokedCertificateEntries}, nil
}

// signCRL signs c's entries with the next CRL number and stores the
// result, updating c. Call with l.mu held.
func (l *Local) signCRL(ctx context.Context, c *crlState, caCert *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	now := l.now().UTC().Truncate(time.Second)
	number := new(big.Int).Add(c.number, big.NewInt(1))
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: number, ThisUpdate: now, NextUpdate: now.Add(crlValidity),
		RevokedCertificateEntries: c.entries,
	}, caCert, caKey)
	if err != nil {
		return fmt.Errorf("sign CRL: %w", err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	if err := l.store.Put(ctx, pathCRL, b); err != nil {
		return fmt.Errorf("store CRL: %w", err)
	}
	c.pem, c.number, c.thisUpdate = b, number, now
	return nil
}
