package pki_test

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/pki"
)

func TestNormalize(t *testing.T) {
	got, err := pki.Request{Tenant: "acme", CommonName: "Proxy.Acme.test", DNSNames: []string{"proxy.acme.test", "B.test", "b.test"},
		IPs: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("10.0.0.1").To4()}, Usage: pki.ServerAuth}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if got.CommonName != "proxy.acme.test" || !slices.Equal(got.DNSNames, []string{"proxy.acme.test", "b.test"}) ||
		len(got.IPs) != 1 || got.TTL != pki.DefaultTTL {
		t.Errorf("Normalize = %+v", got)
	}
	ipCN, err := pki.Request{Tenant: "acme", CommonName: "::1", Usage: pki.ClientAuth, TTL: time.Hour}.Normalize()
	if err != nil || ipCN.CommonName != "::1" || len(ipCN.DNSNames) != 0 || len(ipCN.IPs) != 1 {
		t.Errorf("IP CN: %+v, %v", ipCN, err)
	}
}

func TestNormalizeSerial(t *testing.T) {
	tests := map[string]struct {
		in, want string
	}{
		"canonical":       {"0a1b2c", "0a1b2c"},
		"vault form":      {"0A:1B:2C", "0a1b2c"},
		"hyphens":         {"0a-1b-2c", "0a1b2c"},
		"odd length":      {"a1b", "0a1b"},
		"leading zeros":   {"00:00:a1", "a1"},
		"empty":           {"", ""},
		"not hex":         {"0g", ""},
		"path characters": {"../a", ""},
		"too long":        {strings.Repeat("a", 65), ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := pki.NormalizeSerial(tc.in)
			if tc.want == "" {
				if !errors.Is(err, pki.ErrInvalidRequest) {
					t.Errorf("NormalizeSerial(%q) = %q, %v; want ErrInvalidRequest", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
