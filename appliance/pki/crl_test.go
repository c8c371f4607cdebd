package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/pki"
)

func parseCRL(t *testing.T, a pki.Authority) *x509.RevocationList {
	t.Helper()
	b, err := a.CRL(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("CRL not PEM: %q", b)
	}
	rl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return rl
}
