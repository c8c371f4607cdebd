package smartproxy

import (
	"context"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// deadBroker refuses the proxy's credential.
type deadBroker struct{ *fakeBroker }

func (deadBroker) Whoami(context.Context) (brokerapi.Identity, error) {
	return brokerapi.Identity{}, &brokerapi.Error{StatusError: httpx.StatusError{Status: 401, Message: "missing or invalid tenant token"}}
}

func TestHealth(t *testing.T) {
	ca := proxytest.NewCA(t, "Malleable test CA")
	cfg := testConfig(t, t.TempDir(), ca)
	srv, err := New(cfg, Options{Broker: newFakeBroker(), Storage: newStubStorage()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a Addrs) { ready <- a }) }()
	a := <-ready
	cfg.Proxy.HTTPSListen = strings.Replace(a.HTTPS, "127.0.0.1", "0.0.0.0", 1) // as configured: any address

	msg, err := Health(ctx, cfg, newFakeBroker())
	if err != nil || !strings.Contains(msg, "serves [bmc m2] for tenant acme") {
		t.Errorf("healthy proxy: %q, %v", msg, err)
	}
	_, err = Health(ctx, cfg, deadBroker{})
	if err == nil || !strings.Contains(err.Error(), "does not take its credential: missing or invalid tenant token") {
		t.Errorf("refused credential: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cfg.Proxy.HTTPSListen = a.HTTPS // closed now
	_, err = Health(context.Background(), cfg, newFakeBroker())
	if err == nil || !strings.Contains(err.Error(), "the smart-proxy does not answer at https://"+a.HTTPS) {
		t.Errorf("nothing listening: %v", err)
	}
	if _, err := localURL(ProxyConfig{HTTPSListen: "[::]:8443"}); err != nil {
		t.Error(err)
	}
	if u, _ := localURL(ProxyConfig{HTTPListen: ":8000"}); u != "http://127.0.0.1:8000" {
		t.Errorf("localURL = %q", u)
	}
}
