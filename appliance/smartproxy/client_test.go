package smartproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestClientWire checks what the client sends to the appliance and how it
// reads its answers, against a recorded stand-in (the end-to-end test
// runs it against the real appliance).
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
		"GET /m2/v1/boot/" + stubToken:              {200, "#!ipxe\n"},
		"GET /m2/v1/projects/acme/disks/a%2Fb":      {404, `{"error":"not found"}`},
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
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 403 || ae.NextLeaseStart == nil ||
		!ae.NextLeaseStart.Equal(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)) || !strings.HasPrefix(ae.Message, "node node-3 is not leased") {
		t.Errorf("Power refused = %#v", err)
	}
	if err := c.SetBootDevice(ctx, "node-1", "pxe", true); statusOf(err) != 502 || !strings.Contains(err.Error(), "<html>Bad Gateway</html>") {
		t.Errorf("SetBootDevice with a non-JSON error = %v", err)
	}
	if _, err := c.PowerStatus(ctx, "odd"); err == nil || !strings.Contains(err.Error(), `unexpected power "unknown"`) {
		t.Errorf("a power state other than on/off = %v", err)
	}
	if b, err := c.BootScript(ctx, stubToken); err != nil || string(b) != "#!ipxe\n" {
		t.Errorf("BootScript = %q, %v", b, err)
	}
	if _, err := c.Disk(ctx, "acme", "a/b"); !isNotFound(err) {
		t.Errorf("Disk = %v", err)
	}
	want := []seen{
		{"GET", "/broker/v1/whoami", "Bearer mlb_token", "", ""},
		{"GET", "/broker/v1/nodes/fe80::1%25eth0/power", "Bearer mlb_token", "", ""},
		{"PUT", "/broker/v1/nodes/node-3/power", "Bearer mlb_token", "application/json", `{"action":"on"}`},
		{"PUT", "/broker/v1/nodes/node-1/boot-device", "Bearer mlb_token", "application/json", `{"device":"pxe","persistent":true}`},
		{"GET", "/broker/v1/nodes/odd/power", "Bearer mlb_token", "", ""},
		{"GET", "/m2/v1/boot/" + stubToken, "Bearer mlb_token", "", ""}, // only this tenant's scripts
		{"GET", "/m2/v1/projects/acme/disks/a%2Fb", "Bearer mlb_token", "", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("requests = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// Unreachable: the error names the route, never a boot token.
	app.Close()
	_, err = c.BootScript(ctx, stubToken)
	if err == nil || strings.Contains(err.Error(), stubToken) || !strings.Contains(err.Error(), "/m2/v1/boot/<token>") {
		t.Errorf("unreachable appliance: %v", err)
	}
}
