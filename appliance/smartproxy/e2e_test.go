package smartproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"

	"github.com/malleable-cloud/malleable/appliance"
	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/storage"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// The end-to-end tests run the real appliance in-process: its API
// (appliance.Parts: the admin API, the broker and M2) over a real SQLite store, the reconciler
// with its handover state machine, the embedded allocator (embedded.Allocator,
// membership in the store), and the real M2 backend on file storage. Only
// the two ends are stand-ins: recordingBMC for the nodes' BMCs (it records
// every command that reaches one) and noTargets for tgtd.

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// recordingBMC is embedded.NodePower over simulated BMCs: each node's power,
// and every command that reached a BMC.
type recordingBMC struct {
	mu   sync.Mutex
	on   map[string]bool
	cmds []string
}

var _ embedded.NodePower = (*recordingBMC)(nil)

func (b *recordingBMC) PowerStatus(_ context.Context, node string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.on[node], nil
}

func (b *recordingBMC) Power(_ context.Context, node string, action node.PowerAction) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on[node] = action == "on" || action == "cycle" || action == "reset" || (b.on[node] && action != "off" && action != "soft")
	b.cmds = append(b.cmds, node+" "+string(action))
	return nil
}

func (b *recordingBMC) SetBootDevice(_ context.Context, node string, device node.BootDevice, persistent bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cmds = append(b.cmds, fmt.Sprintf("%s boot %s persistent=%t", node, device, persistent))
	return nil
}

func (b *recordingBMC) commands() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.cmds...)
}

// hardware is what a handover needs, over the allocator (the appliance's
// own adapter is unexported).
type hardware struct{ a *embedded.Allocator }

func (h hardware) PowerOff(ctx context.Context, name string) error {
	return h.a.Power(ctx, name, node.PowerOff)
}
func (h hardware) PowerIsOn(ctx context.Context, node string) (bool, error) {
	return h.a.PowerStatus(ctx, node)
}
func (h hardware) Detach(ctx context.Context, node, project string) error {
	return h.a.Detach(ctx, node, project)
}
func (h hardware) Connect(ctx context.Context, node, project string) error {
	return h.a.Connect(ctx, node, project)
}

// unbind is the handover's disk step over the M2 backend.
type unbind struct{ b *server.Backend }

func (u unbind) UnbindNode(ctx context.Context, node, tenant string) error {
	return u.b.DetachNode(ctx, node, tenant)
}

// noTargets stands in for tgtd: the tests check access, not iSCSI.
type noTargets struct{}

func (noTargets) Apply(context.Context, iscsi.Target) error       { return nil }
func (noTargets) Remove(context.Context, string) error            { return nil }
func (noTargets) Reconcile(context.Context, []iscsi.Target) error { return nil }

// applianceRig is a running in-process appliance.
type applianceRig struct {
	t     testing.TB
	clock *clock
	bmc   *recordingBMC
	rec   *reconcile.Reconciler
	url   string
	admin *client.Client
}

const adminToken = "admin-token-0123456789abcdef"

// newApplianceRig starts an appliance whose broker serves power states
// from cache for cacheTTL (0: every read asks the BMC).
func newApplianceRig(t testing.TB, start time.Time, cacheTTL time.Duration, log *slog.Logger) *applianceRig {
	t.Helper()
	return newApplianceRigM2(t, start, cacheTTL, log, true)
}

// newApplianceRigM2 is newApplianceRig with the M2 backend on or off.
func newApplianceRigM2(t testing.TB, start time.Time, cacheTTL time.Duration, log *slog.Logger, withM2 bool) *applianceRig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "malleable.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{now: start}
	bmc := &recordingBMC{on: map[string]bool{}}
	alloc := &embedded.Allocator{Members: st, BMC: bmc,
		IsOwned:    func(err error) bool { return errors.Is(err, store.ErrAllocated) },
		IsNotFound: func(err error) bool { return errors.Is(err, store.ErrNotFound) }}
	vols, err := storage.NewFile(filepath.Join(dir, "volumes"), storage.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vols.Close() })
	m2b, err := server.Open(ctx, server.Config{DB: filepath.Join(dir, "m2.db"), IQNPrefix: "iqn.2026-11.org.example",
		Portal: "192.0.2.10:3260", Storage: vols, Targets: noTargets{}, Secrets: secrets.NewMemory(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2b.Close() })
	img := make([]byte, 1<<20)
	copy(img[510:], []byte{0x55, 0xaa})
	if _, err := m2b.ImportImage(ctx, "debian-12", bytes.NewReader(img), int64(len(img)), ""); err != nil {
		t.Fatal(err)
	}
	rec := &reconcile.Reconciler{Store: st, Allocator: alloc, Log: log, Now: clk.Now, Concurrency: 2,
		Machine: &lease.Machine{Hardware: hardware{alloc}, Disks: unbind{m2b}, Journal: store.Journal{Store: st, Now: clk.Now},
			Project:     func(t string) string { return "malleable-" + t },
			MaxAttempts: 2, PowerOffTimeout: 5 * time.Second, PollInterval: 10 * time.Millisecond}}
	parts := appliance.Parts{Store: st, Limits: lease.DefaultLimits(), Token: adminToken, Logger: log,
		Now: clk.Now, Allocator: alloc, Reconciler: rec, M2: m2b, Power: power.New(alloc, cacheTTL, clk.Now),
		Project: rec.Machine.Project}
	if !withM2 {
		parts.M2 = nil
	}
	srv := httptest.NewServer(parts.Handler())
	t.Cleanup(srv.Close)
	return &applianceRig{t: t, clock: clk, bmc: bmc, rec: rec, url: srv.URL, admin: client.New(srv.URL, adminToken)}
}

func (a *applianceRig) reconcile() pass.Result {
	a.t.Helper()
	res, err := a.rec.Pass(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	return res
}

// tenantProxy is one tenant's smart-proxy, served over TLS (and its boot
// listener over HTTP), talking to the appliance with the tenant's token.
type tenantProxy struct {
	h    *harness
	boot *httptest.Server
}

func newTenantProxy(t testing.TB, a *applianceRig, tenant string, log *slog.Logger) *tenantProxy {
	t.Helper()
	ctx := context.Background()
	if _, err := a.admin.CreateTenant(ctx, client.TenantSpec{Name: tenant}); err != nil {
		t.Fatal(err)
	}
	token, err := a.admin.TenantToken(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, tenant+" CA")
	dir := t.TempDir()
	cfg := testConfig(t, dir, ca)
	cfg.Broker.URL = a.url
	cfg.Broker.TokenFile = writeFile(t, dir, "broker.token", []byte(token+"\n"))
	cfg.Broker.StatusTimeout = 2 * time.Second
	cfg.BMC.Username = tenant
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := OpenClient(cfg.Broker)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Broker: c.Broker, Storage: c.M2, Logger: log.With("proxy", tenant)})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, srv: srv, ca: ca}
	h.ts = httptest.NewUnstartedServer(srv.Handler())
	h.ts.TLS = srv.tls
	h.ts.StartTLS()
	t.Cleanup(h.ts.Close)
	h.foreman = h.client(ca.clientCert(t, foremanCN))
	boot := httptest.NewServer(srv.BootHandler())
	t.Cleanup(boot.Close)
	return &tenantProxy{h: h, boot: boot}
}

// foreman sends a request as the tenant's Foreman, with the tenant's
// virtual BMC identity, and returns the status and body.
func (p *tenantProxy) foreman(method, path, body string) (int, string) {
	p.h.t.Helper()
	req := foremanRequest(p.h.ts.URL, method, path, body)
	req.SetBasicAuth(p.h.cfg.BMC.Username, bmcPass)
	status, _, b := do(p.h.t, p.h.foreman, req)
	return status, b
}

// json sends a JSON request to the M2 plugin.
func (p *tenantProxy) json(method, path, body string) (int, string) {
	p.h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, p.h.ts.URL+path, rd)
	req.Header.Set("Content-Type", "application/json")
	status, _, b := do(p.h.t, p.h.foreman, req)
	return status, b
}

func (p *tenantProxy) bootScript(token string) (int, string) {
	p.h.t.Helper()
	status, _, b := do(p.h.t, http.DefaultClient, foremanRequest(p.boot.URL, "GET", "/m2/boot/"+token, ""))
	return status, b
}

// expect checks one answer.
func expect(t *testing.T, what string, status int, body string, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus || !strings.Contains(body, want) {
		t.Fatalf("%s: %d %q, want %d containing %q", what, status, body, wantStatus, want)
	}
}

// TestEndToEndHandover hands node-1 from acme to globex at a lease
// boundary through the real appliance. Before and after its lease acme's
// proxy reads "off" and is refused; globex reads the real state and
// powers the node on; the BMC receives only the lessee's and the
// handover's commands; acme's boot script stops being served.
func TestEndToEndHandover(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	log := testLogger(t)
	a := newApplianceRig(t, t0.Add(-time.Minute), 0, log.With("side", "appliance"))
	for i, bmc := range []string{"10.0.0.5", "10.0.0.6"} {
		if _, err := a.admin.CreateNode(ctx, client.NodeSpec{Name: fmt.Sprintf("node-%d", i+1),
			MACs: []string{fmt.Sprintf("52:54:00:00:00:0%d", i+1)}, BMC: &client.BMCSpec{Host: bmc, User: "admin"},
			TenantBMCAddress: fmt.Sprintf("198.18.0.%d", 5+i)}); err != nil {
			t.Fatal(err)
		}
	}
	acme, globex := newTenantProxy(t, a, "acme", log), newTenantProxy(t, a, "globex", log)
	for _, l := range []client.LeaseSpec{
		{Node: "node-1", Tenant: "acme", Start: t0.Format(time.RFC3339), End: t0.Add(time.Hour).Format(time.RFC3339)},
		{Node: "node-1", Tenant: "globex", Start: t0.Add(time.Hour).Format(time.RFC3339), End: t0.Add(2 * time.Hour).Format(time.RFC3339)},
	} {
		if _, err := a.admin.CreateLease(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	// Foreman's :host is the node's tenant-facing BMC address; the real
	// one (10.0.0.5) never reaches a tenant.
	const status = "/bmc/198.18.0.5/chassis/power/status"
	const on, off = `{"action":"status","result":"on"}`, `{"action":"status","result":"off"}`

	// Before any lease starts, nobody holds node-1.
	s, b := acme.foreman("GET", status, "")
	expect(t, "acme status before its lease", s, b, 200, off)
	s, b = acme.foreman("PUT", "/bmc/198.18.0.5/chassis/power/on", "action=on")
	expect(t, "acme power on before its lease", s, b, 400, "node node-1 is not leased to acme now; its next lease to acme starts 2026-12-01T09:00:00Z")

	// acme's lease starts: the handover activates it.
	a.clock.Set(t0)
	if res := a.reconcile(); res.Completed != 1 {
		t.Fatalf("reconcile at acme's start: %+v", res)
	}
	s, b = acme.foreman("GET", status, "")
	expect(t, "acme status, node off", s, b, 200, off)
	s, b = acme.foreman("PUT", "/bmc/198.18.0.5/chassis/power/on", "action=on")
	expect(t, "acme power on", s, b, 200, `{"action":"on","result":true}`)
	s, b = acme.foreman("GET", status, "")
	expect(t, "acme status, node on", s, b, 200, on)
	s, b = acme.foreman("GET", "/bmc/node-1/chassis/power/on", "")
	expect(t, "acme on? by node name", s, b, 200, `{"action":"on","result":true}`)

	// globex, whose lease is next, reads off although the node is on,
	// and can neither power it nor set its boot device.
	s, b = globex.foreman("GET", status, "")
	expect(t, "globex status during acme's lease", s, b, 200, off)
	for _, action := range []string{"on", "off", "cycle", "soft", "reset"} {
		s, b = globex.foreman("PUT", "/bmc/198.18.0.5/chassis/power/"+action, "action="+action)
		expect(t, "globex "+action, s, b, 400, "node node-1 is not leased to globex now; its next lease to globex starts 2026-12-01T10:00:00Z")
	}
	s, b = globex.foreman("PUT", "/bmc/198.18.0.5/chassis/config/bootdevice/pxe", "function=bootdevice&device=pxe")
	expect(t, "globex boot device", s, b, 400, "not leased to globex now")

	// acme provisions: a disk from the golden image, attached to its
	// node by BMC address, whose boot script the node can fetch.
	s, b = acme.json("GET", "/m2/image_list", "")
	expect(t, "acme image list", s, b, 200, `["debian-12"]`)
	s, b = acme.json("POST", "/m2/disks", `{"name":"web1","image":"debian-12"}`)
	expect(t, "acme create_disk", s, b, 201, `"project":"acme","name":"web1","source":"image:debian-12"`)
	s, b = acme.json("POST", "/m2/disks/web1/attach", `{"node":"198.18.0.5"}`)
	expect(t, "acme attach", s, b, 200, `"node":"node-1"`)
	token := between(b, `"boot_token":"`, `"`)
	s, b = acme.bootScript(token)
	expect(t, "node-1 boot script", s, b, 200, "sanboot --keep iscsi:192.0.2.10::3260:1:iqn.2026-11.org.example:acme.web1")
	s, b = acme.json("GET", "/m2/iscsi_target?disk=web2&image=debian-12", "")
	expect(t, "acme prototype iscsi_target", s, b, 200, "iscsi:192.0.2.10::3260:1:iqn.2026-11.org.example:acme.web2")
	s, b = globex.json("GET", "/m2/disks/web1", "")
	expect(t, "globex reads acme's disk", s, b, 404, `{"error":`)
	s, b = globex.json("GET", "/m2/iscsi_target?project=acme&image=debian-12", "")
	expect(t, "globex names acme's project", s, b, 404, `{"error":`)
	s, b = globex.json("POST", "/m2/disks", `{"name":"db1","image":"debian-12"}`)
	expect(t, "globex create_disk", s, b, 201, `"project":"globex"`)
	s, b = globex.json("POST", "/m2/disks/db1/attach", `{"node":"node-1"}`)
	expect(t, "globex attach to acme's node", s, b, 403, "node-1 is not held by globex")

	// The lease boundary: acme's ends, globex's starts; the handover
	// powers node-1 off, unbinds acme's disk and activates globex.
	a.clock.Set(t0.Add(time.Hour))
	if res := a.reconcile(); res.Completed != 1 {
		t.Fatalf("reconcile at the handover: %+v", res)
	}
	s, b = acme.foreman("GET", status, "")
	expect(t, "acme status after the handover", s, b, 200, off)
	s, b = acme.foreman("PUT", "/bmc/198.18.0.5/chassis/power/on", "action=on")
	expect(t, "acme power on after its lease", s, b, 400, "node node-1 is not leased to acme now and has no lease of it ahead")
	s, b = acme.bootScript(token)
	expect(t, "acme's boot script after the handover", s, b, 404, "no boot script for this token")

	s, b = globex.foreman("GET", status, "")
	expect(t, "globex status, real state", s, b, 200, off)
	s, b = globex.foreman("PUT", "/bmc/198.18.0.5/chassis/config/bootdevice/disk", "function=bootdevice&device=disk")
	expect(t, "globex boot device", s, b, 200, `{"action":"disk","result":true}`)
	s, b = globex.foreman("PUT", "/bmc/198.18.0.5/chassis/power/on", "action=on")
	expect(t, "globex power on", s, b, 200, `{"action":"on","result":true}`)
	s, b = globex.foreman("GET", status, "")
	expect(t, "globex status after power on", s, b, 200, on)
	s, b = acme.foreman("GET", status, "")
	expect(t, "acme status while globex's node is on", s, b, 200, off)
	s, b = acme.foreman("PUT", "/bmc/198.18.0.5/chassis/power/off", "action=off")
	expect(t, "acme power off globex's node", s, b, 400, "not leased to acme now")

	// Only acme's command during its lease, the handover's power off and
	// globex's commands during its lease reached the BMC.
	want := []string{"node-1 on", "node-1 off", "node-1 boot disk persistent=false", "node-1 on"}
	if got := a.bmc.commands(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("BMC commands = %q, want %q", got, want)
	}
}

// between returns the text of s between after and before.
func between(s, after, before string) string {
	_, rest, _ := strings.Cut(s, after)
	v, _, _ := strings.Cut(rest, before)
	return v
}

// TestEndToEndCredentials: a proxy whose broker token is wrong cannot
// answer for any node, and says why; the BMC hears nothing.
func TestEndToEndCredentials(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	a := newApplianceRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), 0, log)
	p := newTenantProxy(t, a, "acme", log)
	bad := NewClient(a.url, "mlb_not-a-real-token-at-all", nil)
	srv, err := New(p.h.cfg, Options{Broker: bad.Broker, Storage: bad.M2})
	if err != nil {
		t.Fatal(err)
	}
	p.h.ts = httptest.NewUnstartedServer(srv.Handler())
	p.h.ts.TLS = srv.tls
	p.h.ts.StartTLS()
	t.Cleanup(p.h.ts.Close)
	s, b := p.foreman("GET", "/bmc/198.18.0.5/chassis/power/status", "")
	expect(t, "status with a refused token", s, b, 400, "the appliance refused this smart-proxy's tenant credential")
	s, b = p.json("GET", "/m2/disks", "")
	expect(t, "M2 with a refused token", s, b, 502, "the appliance refused this smart-proxy's tenant credential")
	if _, err := Health(context.Background(), Config{Proxy: ProxyConfig{HTTPSListen: strings.TrimPrefix(p.h.ts.URL, "https://")}, Broker: BrokerConfig{URL: a.url}}, bad.Broker); err == nil ||
		!strings.Contains(err.Error(), "does not take its credential") {
		t.Errorf("Health with a refused token: %v", err)
	}
	if got := a.bmc.commands(); len(got) != 0 {
		t.Errorf("BMC commands = %q", got)
	}
}
