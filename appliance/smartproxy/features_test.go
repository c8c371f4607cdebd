package smartproxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// flakyBroker fails Whoami a number of times before answering.
type flakyBroker struct {
	*fakeBroker
	mu    sync.Mutex
	fails int
	calls int
}

func (b *flakyBroker) Whoami(ctx context.Context) (brokerapi.Identity, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if b.calls <= b.fails {
		return brokerapi.Identity{}, errors.New("dial tcp 127.0.0.1:8780: connect: connection refused")
	}
	return b.fakeBroker.Whoami(ctx)
}

// TestBrokerUnreachableAtStart: a proxy started before the appliance keeps
// asking the broker until it answers, and never advertises a guess.
func TestBrokerUnreachableAtStart(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), proxytest.NewCA(t, "Malleable test CA"))
	cfg.Proxy.HTTPSListen = "127.0.0.1:0"
	b := &flakyBroker{fakeBroker: newFakeBroker(), fails: 2}
	var logs syncBuffer
	srv, err := New(cfg, Options{Broker: b, Storage: newStubStorage(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, nil) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "serving tenant") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if strings.Count(out, "retry_in=") != 2 || !strings.Contains(out, "serving tenant") {
		t.Errorf("want two failed asks, then serving:\n%s", out)
	}
	if !strings.Contains(out, "modules=\"[bmc m2]\"") {
		t.Errorf("the proxy did not say which modules it serves:\n%s", out)
	}
}

// TestFeaturesWithoutBroker: with the broker unreachable and nothing known
// yet, /features says so with 503 rather than guessing.
func TestFeaturesWithoutBroker(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.broker = &flakyBroker{fakeBroker: h.broker, fails: 1}
	status, _, body := proxytest.Do(t, h.foreman, proxytest.ForemanRequest(h.ts.URL, "GET", "/features", ""))
	if status != 503 || !strings.Contains(body, "connection refused") {
		t.Errorf("GET /features with no broker = %d %q, want 503 naming the cause", status, body)
	}
	status, _, body = proxytest.Do(t, h.foreman, proxytest.ForemanRequest(h.ts.URL, "GET", "/features", ""))
	if status != 200 || body != `["bmc","m2"]` {
		t.Errorf("GET /features once the broker answers = %d %q", status, body)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFeaturesConcurrent: Foreman's concurrent calls while the broker's
// answer expires and changes all see a consistent module list (run with
// -race).
func TestFeaturesConcurrent(t *testing.T) {
	h := newHarness(t, nil)
	var mu sync.Mutex
	now := time.Now()
	h.srv.now = func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(time.Second); return now }
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if i == 0 && j == 10 {
					h.broker.mu.Lock()
					h.broker.noM2 = true
					h.broker.mu.Unlock()
				}
				status, _, body := proxytest.Do(t, h.foreman, proxytest.ForemanRequest(h.ts.URL, "GET", "/features", ""))
				if status != 200 || (body != `["bmc","m2"]` && body != `["bmc"]`) {
					t.Errorf("GET /features = %d %s", status, body)
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	now = now.Add(identityTTL)
	mu.Unlock()
	if _, _, body := proxytest.Do(t, h.foreman, proxytest.ForemanRequest(h.ts.URL, "GET", "/features", "")); body != `["bmc"]` {
		t.Errorf("after the appliance's M2 went off: %s", body)
	}
}

// TestFeaturesKeepLastAnswer: once known, the broker's answer stands while
// the broker cannot be asked, and is not asked on every request.
func TestFeaturesKeepLastAnswer(t *testing.T) {
	h := newHarness(t, nil)
	var mu sync.Mutex
	now := time.Now()
	h.srv.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	get := func() string {
		_, _, body := proxytest.Do(t, h.foreman, proxytest.ForemanRequest(h.ts.URL, "GET", "/features", ""))
		return body
	}
	if got := get(); got != `["bmc","m2"]` {
		t.Fatalf("GET /features = %s", got)
	}
	b := &flakyBroker{fakeBroker: h.broker, fails: 100}
	h.srv.broker = b
	mu.Lock()
	now = now.Add(identityTTL)
	mu.Unlock()
	for range 3 {
		if got := get(); got != `["bmc","m2"]` {
			t.Errorf("GET /features with the broker gone = %s, want the last answer", got)
		}
	}
	if b.calls != 1 {
		t.Errorf("the unreachable broker was asked %d times, want once per %s", b.calls, identityTTL)
	}
}
