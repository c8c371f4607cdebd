package appliance

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// brokerBench is an appliance over real parts (SQLite, the embedded
// allocator, IPMI to two simulated BMCs) where, at a fixed now, acme holds
// node-1 and globex holds node-2; acme's lease of node-2 starts in an hour.
type brokerBench struct {
	handler    http.Handler
	sim1, sim2 *bmctest.Sim
	acme       string // acme's broker token
}

func newBrokerBench(b *testing.B) *brokerBench {
	b.Helper()
	ctx := context.Background()
	sim1 := bmctest.Start(b, bmctest.Options{})
	sim2 := bmctest.Start(b, bmctest.Options{})
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { return t0 }
	sec := secrets.NewMemory()
	alloc := embedded.New(st, sec, bmc.New(bmc.Options{Timeout: 500 * time.Millisecond}))

	must := func(err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	for name, sim := range map[string]*bmctest.Sim{"node-1": sim1, "node-2": sim2} {
		_, err := st.CreateNode(ctx, inventory.Node{Name: name, BMC: inventory.BMC{Host: sim.Host, Port: sim.Port, User: sim.User}}, t0)
		must(err)
		must(sec.Put(ctx, secrets.BMCPasswordPath(name), []byte(sim.Password)))
	}
	for _, name := range []string{"acme", "globex"} {
		_, err := st.CreateTenant(ctx, inventory.Tenant{Name: name, State: inventory.TenantReady}, t0)
		must(err)
	}
	const acme = "acme-broker-token-0123456789"
	must(st.SetTenantToken(ctx, "acme", store.TokenHash(acme)))
	for _, l := range []lease.Lease{
		{Node: "node-1", Tenant: "acme", Start: t0, End: t0.Add(time.Hour)},
		{Node: "node-2", Tenant: "globex", Start: t0, End: t0.Add(time.Hour)},
		{Node: "node-2", Tenant: "acme", Start: t0.Add(time.Hour), End: t0.Add(2 * time.Hour)},
	} {
		_, err := st.CreateLease(ctx, l, lease.DefaultLimits(), t0)
		must(err)
	}
	// The handovers that make acme and globex the holders.
	rec := &reconcile.Reconciler{
		Store: st, Allocator: alloc, Log: slog.New(slog.DiscardHandler), Now: now, Concurrency: 2,
		Machine: &lease.Machine{
			Hardware: power.New(alloc, 0, time.Now).Hardware(), Journal: store.Journal{Store: st, Now: now},
			Project:     func(t string) string { return "malleable-" + t },
			MaxAttempts: 1, PowerOffTimeout: 10 * time.Second, PollInterval: 100 * time.Millisecond,
		},
	}
	if res, err := rec.Pass(ctx); err != nil || res.Completed != 2 {
		b.Fatalf("handovers: %+v, %v", res, err)
	}
	h := Parts{Store: st, Limits: lease.DefaultLimits(), Token: "admin-token-0123456789abcdef", Now: now,
		Secrets: sec, Allocator: alloc, Power: power.New(alloc, 10*time.Minute, now)}.Handler()
	return &brokerBench{handler: h, sim1: sim1, sim2: sim2, acme: acme}
}

// get serves one broker request through the appliance's whole handler:
// authentication, router, metrics, broker.
func (bb *brokerBench) get(path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Authorization", "Bearer "+bb.acme)
	w := httptest.NewRecorder()
	bb.handler.ServeHTTP(w, req)
	return w
}

// powerReads counts the power status reads sim's BMC has answered.
func powerReads(sim *bmctest.Sim) int {
	n := 0
	for _, c := range sim.AllCommands() {
		if c.Op == "get" && c.Param == "power" {
			n++
		}
	}
	return n
}

// BenchmarkBrokerPowerStatus measures GET /broker/v1/nodes/{ref}/power as
// a tenant's smart-proxy sends it, in parallel. held: acme's own node,
// answered from a warm power cache (TTL 10m, clock fixed), so the BMC is
// not read during the loop. not-held: a node leased to globex now, which
// acme reads as "off" without its BMC being touched. Both go through the
// handler directly; held-over-http adds a loopback HTTP/1.1 server and
// keep-alive client. Each request costs four SQLite reads (token, node,
// next lease, holder).
func BenchmarkBrokerPowerStatus(b *testing.B) {
	bb := newBrokerBench(b)
	for _, tc := range []struct {
		name, path string
		sim        *bmctest.Sim
		want       string
	}{
		{name: "held", path: "/broker/v1/nodes/node-1/power", sim: bb.sim1, want: `"held": true`},
		{name: "not-held", path: "/broker/v1/nodes/node-2/power", sim: bb.sim2, want: `"held": false`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if w := bb.get(tc.path); w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(tc.want)) ||
				!bytes.Contains(w.Body.Bytes(), []byte(`"power": "off"`)) {
				b.Fatalf("GET %s: %d %s", tc.path, w.Code, w.Body)
			}
			reads := powerReads(tc.sim)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if w := bb.get(tc.path); w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(tc.want)) {
						b.Errorf("GET %s: %d %s", tc.path, w.Code, w.Body)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			if got := powerReads(tc.sim) - reads; got != 0 {
				b.Errorf("the BMC was read %d times during the benchmark, want 0", got)
			}
		})
	}

	b.Run("held-over-http", func(b *testing.B) {
		srv := httptest.NewServer(bb.handler)
		b.Cleanup(srv.Close)
		client := srv.Client()
		client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
		path := srv.URL + "/broker/v1/nodes/node-1/power"
		reads := powerReads(bb.sim1)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest(http.MethodGet, path, nil)
				req.Header.Set("Authorization", "Bearer "+bb.acme)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"held": true`)) {
					b.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		if got := powerReads(bb.sim1) - reads; got != 0 {
			b.Errorf("the BMC was read %d times during the benchmark, want 0", got)
		}
	})
}
