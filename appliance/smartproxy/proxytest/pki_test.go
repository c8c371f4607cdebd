package proxytest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// TestCertificatesChain: what WriteServerTLS writes loads as a key pair
// that chains to the CA for the loopback names, and a client certificate
// chains for client authentication only; another CA's does not.
func TestCertificatesChain(t *testing.T) {
	ca := NewCA(t, "proxytest CA")
	files := ca.WriteServerTLS(t, t.TempDir(), "proxy.acme.example")
	pair, err := tls.LoadX509KeyPair(files.Certificate, files.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	server, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := server.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	client, err := x509.ParseCertificate(ca.ClientCert(t, ForemanCN).Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if client.Subject.CommonName != ForemanCN {
		t.Errorf("client certificate CN = %q", client.Subject.CommonName)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Error("the client certificate verifies as a server certificate")
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: NewCA(t, "another CA").Pool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the client certificate chains to another CA")
	}
}
