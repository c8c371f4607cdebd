package foreman_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/smartproxy"
)

const (
	tenant    = "acme"
	foremanCN = "foreman.acme.test"
)

// nodeBMC is the tenant-facing BMC address Foreman stores for the node;
// the test's broker maps it to the real (simulated) BMC.
var nodeBMC = netip.MustParseAddr("198.18.0.7")

// proxyEnv is a real Malleable smart-proxy (appliance/smartproxy, serving
// HTTPS with the certificates `smart-proxy init` writes) in front of an
// ipmi_sim BMC, and the files the tenant's Foreman needs to call it.
type proxyEnv struct {
	URL         string
	Dir         string
	BMCPassword string
	Sim         *bmctest.Sim
	ClientCert  []byte // Foreman's client certificate and key
	ClientKey   []byte
	CA          []byte
	cfg         smartproxy.Config
	broker      smartproxy.Broker
}

// startProxy writes a smart-proxy directory with smartproxy.WriteInit and
// runs the proxy in-process until the test ends.
func startProxy(t *testing.T) *proxyEnv {
	t.Helper()
	sim := bmctest.Start(t, bmctest.Options{})
	dir := filepath.Join(t.TempDir(), "proxy")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, err := smartproxy.WriteInit(smartproxy.InitSpec{Dir: dir, Tenant: tenant, BrokerURL: "http://127.0.0.1:1",
		BrokerToken: "mlb_test_token_0123456789", Listen: addr, Hosts: []string{"127.0.0.1"}, ForemanCN: foremanCN, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.M2.Enabled = false // this proxy serves BMC only
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	env := &proxyEnv{URL: "https://" + addr, Dir: dir, Sim: sim, BMCPassword: strings.TrimSpace(string(read("bmc.password"))),
		ClientCert: read("foreman.crt"), ClientKey: read("foreman.key"), CA: read("ca.crt")}
	env.cfg, env.broker = cfg, &simBroker{sim: sim, ipmi: bmc.New(bmc.Options{})}
	runProxy(t, cfg, env.broker)
	return env
}

// startUntrusting runs a second proxy from env's files that trusts
// another CN than Foreman's, and returns its URL.
func (env *proxyEnv) startUntrusting(t *testing.T) string {
	t.Helper()
	cfg := env.cfg
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Proxy.HTTPSListen, cfg.Proxy.TrustedHosts = addr, "foreman.globex.test"
	runProxy(t, cfg, env.broker)
	return "https://" + addr
}

// runProxy serves a smart-proxy until the test ends.
func runProxy(t *testing.T, cfg smartproxy.Config, broker smartproxy.Broker) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := smartproxy.New(cfg, smartproxy.Options{Logger: log.With("component", "smart-proxy", "listen", cfg.Proxy.HTTPSListen), Broker: broker})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- srv.Run(ctx, func(smartproxy.Addrs) { close(ready) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("smart-proxy: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("smart-proxy: %v", err)
	}
}

// simBroker stands in for the appliance's broker: the tenant holds the one
// node whose tenant-facing BMC address is nodeBMC, and its power is the
// ipmi_sim BMC's, read and set over IPMI.
type simBroker struct {
	sim  *bmctest.Sim
	ipmi *bmc.IPMI
	mu   sync.Mutex
}

func (b *simBroker) Whoami(context.Context) (brokerapi.Identity, error) {
	return brokerapi.Identity{Tenant: tenant}, nil
}

func (b *simBroker) Nodes(context.Context) ([]brokerapi.Lease, error) { return nil, nil }

func (b *simBroker) target(ref string) (bmc.Target, error) {
	if ref != nodeBMC.String() && ref != "rack-1" {
		return bmc.Target{}, errors.New("not a node of " + tenant)
	}
	return b.sim.Target(), nil
}

func (b *simBroker) PowerStatus(ctx context.Context, ref string) (brokerapi.Power, error) {
	t, err := b.target(ref)
	if err != nil {
		return brokerapi.Power{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	on, err := b.ipmi.PowerStatus(ctx, t)
	if err != nil {
		return brokerapi.Power{}, err
	}
	p := brokerapi.Power{Node: "rack-1", Power: "off", Held: true}
	if on {
		p.Power = "on"
	}
	return p, nil
}

func (b *simBroker) Power(ctx context.Context, ref, action string) error {
	t, err := b.target(ref)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ipmi.Power(ctx, t, action)
}

func (b *simBroker) SetBootDevice(ctx context.Context, ref, device string, persistent bool) error {
	t, err := b.target(ref)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ipmi.SetBootDevice(ctx, t, device, persistent)
}

var _ smartproxy.Broker = (*simBroker)(nil)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
