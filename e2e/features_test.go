package e2e

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/smartproxy"
)

// TestFeaturesFollowApplianceM2: the proxy advertises m2 in /features,
// /version and /v2/features only while the appliance's M2 backend is on,
// as the real appliance's broker says, and `health` agrees.
func TestFeaturesFollowApplianceM2(t *testing.T) {
	for name, tc := range map[string]struct {
		m2                bool
		features, version string
		v2                []string
	}{
		"M2 on":  {true, `["bmc","m2"]`, `{"version":"dev","modules":{"bmc":"dev","m2":"dev"}}`, []string{`"bmc":`, `"m2":`}},
		"M2 off": {false, `["bmc"]`, `{"version":"dev","modules":{"bmc":"dev"}}`, []string{`"bmc":`}},
	} {
		t.Run(name, func(t *testing.T) {
			log := slog.New(slog.DiscardHandler)
			a := newApplianceRigM2(t, time.Now(), 0, log, tc.m2)
			p := newTenantProxy(t, a, "acme", log)
			for path, want := range map[string]string{"/features": tc.features, "/version": tc.version} {
				if status, body := p.foreman("GET", path, ""); status != 200 || body != want {
					t.Errorf("GET %s = %d %s, want %s", path, status, body, want)
				}
			}
			status, body := p.foreman("GET", "/v2/features", "")
			if status != 200 || strings.Count(body, `"state":"running"`) != len(tc.v2) {
				t.Errorf("GET /v2/features = %d %s, want %d modules", status, body, len(tc.v2))
			}
			for _, want := range tc.v2 {
				if !strings.Contains(body, want) {
					t.Errorf("GET /v2/features lacks %s: %s", want, body)
				}
			}
			if status, _ := p.json("GET", "/m2/images", ""); (status == 404) == tc.m2 {
				t.Errorf("GET /m2/images = %d with the appliance's M2 on=%v", status, tc.m2)
			}
			cfg := p.cfg
			cfg.Proxy.HTTPSListen = strings.TrimPrefix(p.url, "https://")
			c, err := smartproxy.OpenClient(cfg.Broker)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := smartproxy.Health(context.Background(), cfg, c.Broker)
			if err != nil || !strings.Contains(msg, "serves "+strings.NewReplacer(`"`, "", ",", " ").Replace(tc.features)) {
				t.Errorf("health = %q, %v", msg, err)
			}
		})
	}
}
