package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// BenchmarkPowerStatus measures Foreman's power-status read, GET
// /bmc/<bmc address>/chassis/power/status, on loopback: over TLS with
// Foreman's client certificate into the proxy, then over HTTP with the
// tenant's token into the real appliance broker (SQLite store, the
// embedded allocator, the broker's 5 s power cache as configured by
// default; the BMC is recorded, not simulated over IPMI). "broker" is the
// same read straight from the broker, for the proxy's share. It reports
// requests per second and p50/p99 latency:
//
//	go test -run '^$' -bench PowerStatus -benchtime 10s -cpu 1,2,4 ./e2e/
func BenchmarkPowerStatus(b *testing.B) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	log := slog.New(slog.DiscardHandler)
	a := newApplianceRig(b, t0.Add(-time.Minute), 5*time.Second, log)
	if _, err := a.admin.CreateNode(ctx, client.NodeSpec{Name: "node-1", MACs: []string{"52:54:00:00:00:01"},
		BMC: &client.BMCSpec{Host: "10.0.0.5", User: "admin"}, TenantBMCAddress: "198.18.0.5"}); err != nil {
		b.Fatal(err)
	}
	p := newTenantProxy(b, a, "acme", log)
	if _, err := a.admin.CreateLease(ctx, client.LeaseSpec{Node: "node-1", Tenant: "acme",
		Start: t0.Format(time.RFC3339), End: t0.Add(24 * time.Hour).Format(time.RFC3339)}); err != nil {
		b.Fatal(err)
	}
	a.clock.Set(t0)
	a.reconcile()
	token := p.token
	foreman := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, TLSClientConfig: &tls.Config{
		RootCAs: p.ca.Pool(), Certificates: []tls.Certificate{p.ca.ClientCert(b, proxytest.ForemanCN)}, MinVersion: tls.VersionTLS12}}}
	plain := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

	for _, bc := range []struct {
		name string
		c    *http.Client
		req  func() *http.Request
		want string
	}{
		{"proxy", foreman, func() *http.Request {
			r := proxytest.ForemanRequest(p.url, "GET", "/bmc/198.18.0.5/chassis/power/status", "")
			r.SetBasicAuth("acme", proxytest.BMCPassword)
			return r
		}, `{"action":"status","result":"off"}`},
		{"broker", plain, func() *http.Request {
			r, _ := http.NewRequest("GET", a.url+"/broker/v1/nodes/198.18.0.5/power", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			return r
		}, ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					t := time.Now()
					resp, err := bc.c.Do(bc.req())
					if err != nil {
						b.Error(err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || (bc.want != "" && string(body) != bc.want) {
						b.Errorf("%d %s", resp.StatusCode, body)
						return
					}
					mine = append(mine, time.Since(t))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			elapsed := time.Since(start)
			if len(lat) == 0 {
				return
			}
			slices.Sort(lat)
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
