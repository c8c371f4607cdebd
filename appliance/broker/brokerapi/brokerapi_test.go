package brokerapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// TestDecodeAnswers decodes, strictly, a sample of each answer as the
// broker sends it, so a field renamed on either side fails here.
func TestDecodeAnswers(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	end := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, body string
		into, want any
	}{
		{"whoami", `{"tenant":"acme","features":{"m2":true}}`,
			&Identity{}, &Identity{Tenant: "acme", Features: Features{M2: true}}},
		{"nodes", `[{"node":"node-1","bmc_address":"10.20.0.11","macs":["52:54:00:00:00:01"],"start":"2026-12-01T10:00:00Z","end":"2026-12-04T10:00:00Z","state":"active"},
			{"node":"node-2","macs":[],"start":"2026-12-01T10:00:00Z","end":"2026-12-04T10:00:00Z","state":"scheduled"}]`,
			&[]Lease{}, &[]Lease{
				{Node: "node-1", BMCAddress: "10.20.0.11", MACs: []string{"52:54:00:00:00:01"}, Start: start, End: end, State: "active"},
				{Node: "node-2", MACs: []string{}, Start: start, End: end, State: "scheduled"}}},
		{"power held", `{"node":"node-1","power":"on","held":true,"stale":true,"age_seconds":42}`,
			&Power{}, &Power{Node: "node-1", Power: "on", Held: true, Stale: true, AgeSeconds: 42}},
		{"power not held", `{"node":"node-3","power":"off","held":false,"next_lease_start":"2026-12-01T10:00:00Z","handover":true}`,
			&Power{}, &Power{Node: "node-3", Power: "off", NextLeaseStart: &start, Handover: true}},
		{"power action", `{"action":"cycle","node":"node-1","result":true}`,
			&PowerResult{}, &PowerResult{Action: "cycle", Node: "node-1", Result: true}},
		{"boot device", `{"device":"pxe","persistent":true,"node":"node-1","result":true}`,
			&BootResult{}, &BootResult{Device: "pxe", Persistent: true, Node: "node-1", Result: true}},
		{"refusal", `{"error":"node node-3 is not leased to acme now; its next lease to acme starts 2026-12-01T10:00:00Z","node":"node-3","next_lease_start":"2026-12-01T10:00:00Z"}`,
			&Refusal{}, &Refusal{Error: "node node-3 is not leased to acme now; its next lease to acme starts 2026-12-01T10:00:00Z", Node: "node-3", NextLeaseStart: &start}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(tc.body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(tc.into); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tc.into, tc.want) {
				t.Errorf("decoded %+v, want %+v", tc.into, tc.want)
			}
		})
	}
	// The requests encode as the broker decodes them.
	for _, tc := range []struct {
		v    any
		want string
	}{
		{PowerRequest{Action: "on"}, `{"action":"on"}`},
		{BootRequest{Device: "pxe", Persistent: true}, `{"device":"pxe","persistent":true}`},
	} {
		if b, _ := json.Marshal(tc.v); string(b) != tc.want {
			t.Errorf("%T encodes as %s, want %s", tc.v, b, tc.want)
		}
	}
}

// TestClientWire checks what the client sends and how it reads answers,
// against a recorded stand-in (the smart-proxy's end-to-end test runs it
// against the real appliance).
func TestClientWire(t *testing.T) {
	type seen struct{ method, path, auth, ct, body string }
	var got []seen
	answers := map[string]struct {
		status int
		body   string
	}{
		"GET /broker/v1/whoami":                     {200, `{"tenant":"acme","features":{"m2":true}}`},
		"GET /broker/v1/nodes/fe80::1%25eth0/power": {200, `{"node":"node-1","power":"on","held":true}`},
		"PUT /broker/v1/nodes/node-3/power":         {403, `{"error":"node node-3 is not leased to acme now; its next lease to acme starts 2026-12-01T10:00:00Z","node":"node-3","next_lease_start":"2026-12-01T10:00:00Z"}`},
		"PUT /broker/v1/nodes/node-1/boot-device":   {502, "<html>Bad Gateway</html>"},
		"GET /broker/v1/nodes/odd/power":            {200, `{"node":"odd","power":"unknown"}`},
		"GET /broker/v1/nodes":                      {200, `[]`},
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		a, ok := answers[r.Method+" "+r.URL.EscapedPath()]
		if !ok {
			a.status, a.body = 599, "unexpected"
		}
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))
	defer app.Close()
	c := NewClient(app.URL+"/", "mlb_token", nil)
	ctx := context.Background()

	if id, err := c.Whoami(ctx); err != nil || id.Tenant != "acme" || !id.Features.M2 {
		t.Errorf("Whoami = %+v, %v", id, err)
	}
	if p, err := c.PowerStatus(ctx, "fe80::1%eth0"); err != nil || p.Power != "on" || !p.Held {
		t.Errorf("PowerStatus = %+v, %v", p, err)
	}
	err := c.Power(ctx, "node-3", "on")
	var be *Error
	if !errors.As(err, &be) || be.Status != 403 || be.NextLeaseStart == nil ||
		!be.NextLeaseStart.Equal(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)) || !strings.HasPrefix(be.Message, "node node-3 is not leased") {
		t.Errorf("Power refused = %#v", err)
	}
	if httpx.StatusOf(err) != 403 {
		t.Errorf("StatusOf(refusal) = %d", httpx.StatusOf(err))
	}
	if err := c.SetBootDevice(ctx, "node-1", "pxe", true); httpx.StatusOf(err) != 502 || !strings.Contains(err.Error(), "<html>Bad Gateway</html>") {
		t.Errorf("SetBootDevice with a non-JSON error = %v", err)
	}
	if _, err := c.PowerStatus(ctx, "odd"); err == nil || !strings.Contains(err.Error(), `unexpected power "unknown"`) {
		t.Errorf("a power state other than on/off = %v", err)
	}
	if ls, err := c.Nodes(ctx); err != nil || len(ls) != 0 {
		t.Errorf("Nodes = %+v, %v", ls, err)
	}
	want := []seen{
		{"GET", "/broker/v1/whoami", "Bearer mlb_token", "", ""},
		{"GET", "/broker/v1/nodes/fe80::1%25eth0/power", "Bearer mlb_token", "", ""},
		{"PUT", "/broker/v1/nodes/node-3/power", "Bearer mlb_token", "application/json", `{"action":"on"}`},
		{"PUT", "/broker/v1/nodes/node-1/boot-device", "Bearer mlb_token", "application/json", `{"device":"pxe","persistent":true}`},
		{"GET", "/broker/v1/nodes/odd/power", "Bearer mlb_token", "", ""},
		{"GET", "/broker/v1/nodes", "Bearer mlb_token", "", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v\nwant %+v", got, want)
	}

	// Unreachable: the error names the route.
	app.Close()
	if _, err := c.Whoami(ctx); err == nil || !strings.Contains(err.Error(), "GET /broker/v1/whoami") || httpx.StatusOf(err) != 0 {
		t.Errorf("unreachable appliance: %v", err)
	}
}
