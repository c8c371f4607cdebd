package smartproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

const (
	bmcUser = "acme"
	tenant  = "acme"
)

// harness is a Server over a fake broker and stub storage, served over
// real TLS on loopback with a test CA.
type harness struct {
	t       testing.TB
	cfg     Config
	srv     *Server
	ts      *httptest.Server
	broker  *fakeBroker
	storage *stubStorage
	ca      *proxytest.CA
	foreman *http.Client // presents the trusted CN
}

// testConfig is a valid configuration whose files live in dir.
func testConfig(t testing.TB, dir string, ca *proxytest.CA) Config {
	t.Helper()
	files := ca.WriteServerTLS(t, dir, "proxy.acme.example")
	cfg := DefaultConfig()
	cfg.Proxy.HTTPSListen = "127.0.0.1:0"
	cfg.Proxy.SSLCertificate = files.Certificate
	cfg.Proxy.SSLPrivateKey = files.PrivateKey
	cfg.Proxy.SSLCAFile = files.CA
	cfg.Proxy.TrustedHosts = "other.example, Foreman.ACME.example" // compared lowercased
	cfg.Broker.URL = "http://appliance.invalid:8780"
	cfg.Broker.TokenFile = proxytest.WriteFile(t, dir, "broker.token", []byte("mlb_0123456789abcdef\n"))
	cfg.Broker.StatusTimeout = 300 * time.Millisecond
	cfg.BMC.Username = bmcUser
	cfg.BMC.PasswordFile = proxytest.WriteFile(t, dir, "bmc.password", []byte(proxytest.BMCPassword+"\n"))
	return cfg
}

func newHarness(t testing.TB, mutate func(*Config)) *harness {
	t.Helper()
	ca := proxytest.NewCA(t, "Malleable test CA")
	cfg := testConfig(t, t.TempDir(), ca)
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, broker: newFakeBroker(), storage: newStubStorage(), ca: ca}
	log := slog.New(slog.DiscardHandler)
	if tt, ok := t.(*testing.T); ok {
		log = proxytest.Logger(tt)
	}
	srv, err := New(cfg, Options{Broker: h.broker, Storage: h.storage, Version: "1.4.0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.ts = httptest.NewUnstartedServer(srv.Handler())
	h.ts.TLS = srv.tls
	h.ts.StartTLS()
	t.Cleanup(h.ts.Close)
	h.foreman = ca.Client(ca.ClientCert(t, proxytest.ForemanCN))
	return h
}

// fakeNode is a node as the fake broker knows it for the tenant.
type fakeNode struct {
	name, bmc string
	on, held  bool
	next      *time.Time
	fail      error // every call fails with it
	hang      bool  // every call waits for its deadline
}

// fakeBroker answers like the appliance's broker, for tenant acme. acts
// records the commands that reached a "BMC": only a held node's.
type fakeBroker struct {
	mu    sync.Mutex
	nodes []*fakeNode
	acts  []string
	noM2  bool // the appliance's M2 is off
}

var nextLease = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func newFakeBroker() *fakeBroker {
	return &fakeBroker{nodes: []*fakeNode{
		{name: "node-1", bmc: "10.0.0.5", on: true, held: true},
		{name: "node-2", bmc: "10.0.0.6", held: true},
		{name: "node-3", bmc: "10.0.0.7", on: true, next: &nextLease},
		{name: "node-4", bmc: "10.0.0.8", on: true},
		{name: "node-9", bmc: "10.0.0.9", held: true, fail: &brokerapi.Error{StatusError: httpx.StatusError{Status: 502, Message: "node node-9: power control failed: no answer from the BMC"}}},
		{name: "node-10", bmc: "10.0.0.10", held: true, hang: true},
	}}
}

func (b *fakeBroker) find(ctx context.Context, ref string) (*fakeNode, error) {
	b.mu.Lock()
	var found *fakeNode
	for _, n := range b.nodes {
		if n.name == ref || n.bmc == ref {
			found = n
			break
		}
	}
	b.mu.Unlock()
	switch {
	case found == nil:
		return nil, &brokerapi.Error{StatusError: httpx.StatusError{Status: 404, Message: fmt.Sprintf("node %q is not leased to %s", ref, tenant)}}
	case found.hang:
		<-ctx.Done()
		return nil, fmt.Errorf("GET /broker/v1/nodes/%s/power: %w", ref, ctx.Err())
	}
	return found, found.fail
}

// refusal is the broker's 403 for a node the tenant does not hold.
func refusal(n *fakeNode) error {
	msg := fmt.Sprintf("node %s is not leased to %s now", n.name, tenant)
	if n.next != nil {
		msg += "; its next lease to " + tenant + " starts " + n.next.Format(time.RFC3339)
	} else {
		msg += " and has no lease of it ahead"
	}
	return &brokerapi.Error{StatusError: httpx.StatusError{Status: 403, Message: msg}, NextLeaseStart: n.next}
}

func (b *fakeBroker) Whoami(context.Context) (brokerapi.Identity, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return brokerapi.Identity{Tenant: tenant, Features: brokerapi.Features{M2: !b.noM2}}, nil
}

func (b *fakeBroker) Nodes(context.Context) ([]brokerapi.Lease, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []brokerapi.Lease
	for _, n := range b.nodes {
		if n.held || n.next != nil {
			out = append(out, brokerapi.Lease{Node: n.name, BMCAddress: n.bmc, MACs: []string{"52:54:00:00:00:0" + n.name[len(n.name)-1:]}, State: "active"})
		}
	}
	return out, nil
}

func (b *fakeBroker) PowerStatus(ctx context.Context, ref string) (brokerapi.Power, error) {
	n, err := b.find(ctx, ref)
	if err != nil {
		return brokerapi.Power{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p := brokerapi.Power{Node: n.name, Power: "off", Held: n.held, NextLeaseStart: n.next}
	if n.held && n.on {
		p.Power = "on"
	}
	return p, nil
}

func (b *fakeBroker) Power(ctx context.Context, ref, action string) error {
	n, err := b.find(ctx, ref)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !n.held {
		return refusal(n)
	}
	switch action {
	case "on", "cycle", "reset":
		n.on = true
	case "off", "soft":
		n.on = false
	}
	b.acts = append(b.acts, n.name+" "+action)
	return nil
}

func (b *fakeBroker) SetBootDevice(ctx context.Context, ref, device string, persistent bool) error {
	n, err := b.find(ctx, ref)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !n.held {
		return refusal(n)
	}
	b.acts = append(b.acts, fmt.Sprintf("%s boot %s persistent=%t", n.name, device, persistent))
	return nil
}

func (b *fakeBroker) takeActs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.acts
	b.acts = nil
	return out
}

// stubStorage is an in-memory M2 API for tenant acme's project.
type stubStorage struct {
	mu    sync.Mutex
	disks map[string]m2.Disk
	snaps []m2.Snapshot
}

const stubToken = "b007b007b007b007b007b007b007b007b007b007b007b007b007b007b007b007"

func newStubStorage() *stubStorage { return &stubStorage{disks: map[string]m2.Disk{}} }

func (s *stubStorage) own(project string) error {
	if project != tenant {
		return &httpx.StatusError{Status: 404, Message: fmt.Sprintf("project %q: not found", project)}
	}
	return nil
}

func (s *stubStorage) Images(context.Context) ([]m2.Image, error) {
	return []m2.Image{{Name: "debian-12", Size: 1 << 30}, {Name: "rocky_9", Size: 2 << 30}}, nil
}

func (s *stubStorage) Disks(_ context.Context, project string) ([]m2.Disk, error) {
	if err := s.own(project); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []m2.Disk
	for _, d := range s.disks {
		out = append(out, d)
	}
	return out, nil
}

func (s *stubStorage) Disk(_ context.Context, project, name string) (m2.Disk, error) {
	if err := s.own(project); err != nil {
		return m2.Disk{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.disks[name]
	if !ok {
		return d, &httpx.StatusError{Status: 404, Message: fmt.Sprintf("disk %s/%s: not found", project, name)}
	}
	return d, nil
}

func (s *stubStorage) CreateDisk(_ context.Context, project, name, image, snapshot string) (m2.Disk, error) {
	if err := s.own(project); err != nil {
		return m2.Disk{}, err
	}
	if err := m2.ValidateDiskName("disk", name); err != nil {
		return m2.Disk{}, &httpx.StatusError{Status: 400, Message: err.Error()}
	}
	if (image == "") == (snapshot == "") {
		return m2.Disk{}, &httpx.StatusError{Status: 400, Message: "bad request: give exactly one of image or snapshot"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.disks[name]; ok {
		return m2.Disk{}, &httpx.StatusError{Status: 409, Message: fmt.Sprintf("disk %s/%s: already exists", project, name)}
	}
	src := "image:" + image
	if snapshot != "" {
		src = "snapshot:" + snapshot
	}
	d := m2.Disk{Project: project, Name: name, Source: src, Size: 1 << 30,
		Target: m2.Target{Portal: "192.0.2.10:3260", IQN: "iqn.2026-11.io.malleable:" + project + "." + name, LUN: 1, CHAPUser: "m2-d1"}}
	s.disks[name] = d
	return d, nil
}

func (s *stubStorage) DeleteDisk(_ context.Context, project, name string) error {
	if _, err := s.Disk(context.Background(), project, name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.disks, name)
	return nil
}

func (s *stubStorage) Attach(_ context.Context, project, disk, node string) (m2.Attachment, error) {
	d, err := s.Disk(context.Background(), project, disk)
	if err != nil {
		return m2.Attachment{}, err
	}
	if node != "node-1" && node != "node-2" {
		return m2.Attachment{}, &httpx.StatusError{Status: 403, Message: "forbidden: node " + node + " is not held by " + project}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d.Node = node
	s.disks[disk] = d
	return m2.Attachment{Disk: disk, Node: node, Initiator: "iqn.2026-11.io.malleable:node." + node, BootToken: stubToken}, nil
}

func (s *stubStorage) Detach(_ context.Context, project, disk string) error {
	_, err := s.Disk(context.Background(), project, disk)
	return err
}

func (s *stubStorage) DiskBootScript(_ context.Context, project, disk string) ([]byte, error) {
	if _, err := s.Disk(context.Background(), project, disk); err != nil {
		return nil, err
	}
	return []byte("#!ipxe\nsanboot --keep iscsi:192.0.2.10::3260:1:iqn.2026-11.io.malleable:acme." + disk + "\n"), nil
}

func (s *stubStorage) BootScript(_ context.Context, token string) ([]byte, error) {
	if token != stubToken {
		return nil, &httpx.StatusError{Status: 404, Message: "no boot script for this token"}
	}
	return []byte("#!ipxe\nset username m2-d1\nset password s3cret\nsanboot --keep iscsi:192.0.2.10::3260:1:iqn.2026-11.io.malleable:acme.web1\n"), nil
}

func (s *stubStorage) CreateSnapshot(_ context.Context, project, disk, name string) (m2.Snapshot, error) {
	if _, err := s.Disk(context.Background(), project, disk); err != nil {
		return m2.Snapshot{}, err
	}
	sn := m2.Snapshot{Project: project, Name: name, Disk: disk}
	s.mu.Lock()
	s.snaps = append(s.snaps, sn)
	s.mu.Unlock()
	return sn, nil
}

func (s *stubStorage) Snapshots(_ context.Context, project string) ([]m2.Snapshot, error) {
	if err := s.own(project); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]m2.Snapshot(nil), s.snaps...), nil
}

func (s *stubStorage) RemoveSnapshot(_ context.Context, project, name string) error {
	return s.own(project)
}
