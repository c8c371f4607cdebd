package proxytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"
)

// CA is a certificate authority made for one test with crypto/x509.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// NewCA makes a CA named name, valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Malleable tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// PEM returns the CA's certificate, PEM-encoded: a proxy's ssl_ca_file.
func (ca *CA) PEM() []byte { return ca.pem }

// Issue signs a certificate for cn: a server certificate for localhost,
// 127.0.0.1 and ::1 when server is set, else a client certificate. sans
// are extra DNS names, which the proxy must ignore.
func (ca *CA) Issue(t testing.TB, cn string, server bool, sans ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     sans,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = append(tmpl.DNSNames, "localhost")
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// ClientCert returns a TLS client certificate for cn (see Issue for sans).
func (ca *CA) ClientCert(t testing.TB, cn string, sans ...string) tls.Certificate {
	t.Helper()
	c, k := ca.Issue(t, cn, false, sans...)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Client returns an HTTPS client that trusts only the CA and presents
// certs.
func (ca *CA) Client(certs ...tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12}}}
}

// TLSFiles are the files a proxy's [smart_proxy] section names for its
// HTTPS listener.
type TLSFiles struct {
	// Certificate and PrivateKey are ssl_certificate and ssl_private_key.
	Certificate, PrivateKey string
	// CA is ssl_ca_file: this CA's certificate.
	CA string
}

// WriteServerTLS issues a server certificate for cn (see Issue) and
// writes it, its key and the CA's certificate under dir as proxy.crt,
// proxy.key and ca.crt.
func (ca *CA) WriteServerTLS(t testing.TB, dir, cn string) TLSFiles {
	t.Helper()
	c, k := ca.Issue(t, cn, true)
	return TLSFiles{Certificate: WriteFile(t, dir, "proxy.crt", c), PrivateKey: WriteFile(t, dir, "proxy.key", k),
		CA: WriteFile(t, dir, "ca.crt", ca.pem)}
}
