package smartproxy

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// TestM2Routes walks the M2 plugin in order: the prototype's routes as
// foreman_m2 calls them, then Malleable's disk lifecycle.
func TestM2Routes(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.M2.BootURL = "http://proxy.acme.example:8000/" })
	steps := []struct {
		method, path, ct, body string
		client                 *http.Client
		wantStatus             int
		wantCT                 string
		want                   string // the whole body, or a prefix ending in "…"
	}{
		{"GET", "/m2/test", "", "", nil, 200, "text/plain; charset=utf-8", "test"},
		{"GET", "/m2/image_list", "", "", nil, 200, "application/json", `["debian-12","rocky_9"]`},
		{"GET", "/m2/image_list?project=acme", "", "", nil, 200, "application/json", `["debian-12","rocky_9"]`},
		{"GET", "/m2/snapshot_list", "", "", nil, 200, "application/json", `[]`},
		{"GET", "/m2/iscsi_target?disk=web1.acme.example&image=debian-12", "", "", nil, 200, "text/plain; charset=utf-8", "iscsi:192.0.2.10::3260:1:iqn.2026-11.io.malleable:acme.web1.acme.example"},
		{"GET", "/m2/iscsi_target?disk=web1.acme.example&image=debian-12", "", "", nil, 200, "text/plain; charset=utf-8", "iscsi:192.0.2.10::3260:1:iqn.2026-11.io.malleable:acme.web1.acme.example"},
		{"GET", "/m2/iscsi_target?disk=web1.acme.example&image=rocky_9", "", "", nil, 409, "application/json", `{"error":"disk web1.acme.example already exists, cloned from image:debian-12, not image rocky_9"}`},
		{"GET", "/m2/iscsi_target?image=debian-12", "", "", nil, 200, "text/plain; charset=utf-8", "iscsi:192.0.2.10::3260:1:iqn.2026-11.io.malleable:acme.debian-12"},
		{"GET", "/m2/iscsi_target?project=globex&image=debian-12", "", "", nil, 404, "application/json", `{"error":"project \"globex\": not found"}`},
		{"GET", "/m2/iscsi_target?disk=x", "", "", nil, 400, "application/json", `{"error":"image: the golden image to clone is required"}`},
		{"DELETE", "/m2/iscsi_target?disk=debian-12", "", "", nil, 200, "text/plain; charset=utf-8", "Success"},
		{"DELETE", "/m2/iscsi_target?disk=debian-12", "", "", nil, 404, "application/json", `{"error":"disk acme/debian-12: not found"}`},
		{"GET", "/m2/images", "", "", nil, 200, "application/json", `[{"name":"debian-12","size":1073741824,…`},
		{"GET", "/m2/nodes", "", "", nil, 200, "application/json", `[{"node":"node-1","bmc_address":"10.0.0.5",…`},
		{"POST", "/m2/disks", "application/json", `{"name":"web2","image":"debian-12"}`, nil, 201, "application/json", `{"project":"acme","name":"web2","source":"image:debian-12",…`},
		{"POST", "/m2/disks", "application/x-www-form-urlencoded", `name=web3&snapshot=s0`, nil, 201, "application/json", `{"project":"acme","name":"web3","source":"snapshot:s0",…`},
		{"POST", "/m2/disks", "application/json", `{"name":"web4","image":"debian-12","size":"1"}`, nil, 400, "application/json", `{"error":"size: unknown field (known: name, image, snapshot)"}`},
		{"POST", "/m2/disks", "application/json", `{"name":4}`, nil, 400, "application/json", `{"error":"name: must be a JSON string"}`},
		{"POST", "/m2/disks", "application/json", `{"name":"a"} {}`, nil, 400, "application/json", `{"error":"body: unexpected data after the JSON object"}`},
		{"POST", "/m2/disks", "text/plain", `name=web4`, nil, 415, "application/json", `{"error":"body must be application/json or application/x-www-form-urlencoded"}`},
		{"POST", "/m2/disks", "application/json", `{"name":"Web_4","image":"debian-12"}`, nil, 400, "application/json", `{"error":"invalid: disk \"Web_4\" must be…`},
		{"GET", "/m2/disks/web2", "", "", nil, 200, "application/json", `{"project":"acme","name":"web2",…`},
		{"GET", "/m2/disks/nope", "", "", nil, 404, "application/json", `{"error":"disk acme/nope: not found"}`},
		{"POST", "/m2/disks/web2/attach", "application/json", `{"node":"10.0.0.6"}`, nil, 200, "application/json",
			`{"disk":"web2","node":"node-2","initiator":"iqn.2026-11.io.malleable:node.node-2","boot_token":"` + stubToken + `","boot_url":"http://proxy.acme.example:8000/m2/boot/` + stubToken + `"}`},
		{"POST", "/m2/disks/web3/attach", "application/x-www-form-urlencoded", `node=52:54:00:00:00:01`, nil, 200, "application/json", `{"disk":"web3","node":"node-1",…`},
		{"POST", "/m2/disks/web2/attach", "application/json", `{"node":"10.0.0.7"}`, nil, 403, "application/json", `{"error":"forbidden: node node-3 is not held by acme"}`},
		{"POST", "/m2/disks/web2/attach", "application/json", `{}`, nil, 400, "application/json", `{"error":"node: the host to attach the disk to is required"}`},
		{"GET", "/m2/disks/web2/boot.ipxe", "", "", nil, 200, "text/plain; charset=utf-8", "#!ipxe\nsanboot --keep iscsi:192.0.2.10::3260:1:iqn.2026-11.io.malleable:acme.web2\n"},
		{"GET", "/m2/boot/" + stubToken, "", "", h.ca.Client(), 200, "text/plain; charset=utf-8", "#!ipxe\nset username m2-d1…"},
		{"GET", "/m2/boot/" + strings.Repeat("f", 64), "", "", h.ca.Client(), 404, "application/json", `{"error":"no boot script for this token"}`},
		{"GET", "/m2/boot/x", "", "", h.ca.Client(), 404, "application/json", `{"error":"no boot script for this token"}`},
		{"POST", "/m2/disks/web2/snapshots", "application/json", `{"name":"s1"}`, nil, 201, "application/json", `{"project":"acme","name":"s1","disk":"web2",…`},
		{"GET", "/m2/snapshots", "", "", nil, 200, "application/json", `[{"project":"acme","name":"s1","disk":"web2",…`},
		{"GET", "/m2/snapshot_list", "", "", nil, 200, "application/json", `[["s1","web2"]]`},
		{"DELETE", "/m2/snapshots/s1", "", "", nil, 204, "", ""},
		{"POST", "/m2/disks/web2/detach", "", "", nil, 204, "", ""},
		{"DELETE", "/m2/disks/web2", "", "", nil, 204, "", ""},
		{"PUT", "/m2/disks", "", "", nil, 405, "application/json", `{"error":"method not allowed on this route"}`},
		{"GET", "/m2/nope", "", "", nil, 404, "application/json", `{"error":"no such route"}`},
		{"GET", "/m2", "", "", nil, 404, "application/json", `{"error":"no such route"}`},
	}
	for _, st := range steps {
		c := st.client
		if c == nil {
			c = h.foreman
		}
		var body io.Reader
		if st.body != "" {
			body = strings.NewReader(st.body)
		}
		req, _ := http.NewRequest(st.method, h.ts.URL+st.path, body)
		if st.ct != "" {
			req.Header.Set("Content-Type", st.ct)
		}
		status, ct, got := proxytest.Do(t, c, req)
		want, prefix := strings.CutSuffix(st.want, "…")
		if status != st.wantStatus || ct != st.wantCT || (prefix && !strings.HasPrefix(got, want)) || (!prefix && got != want) {
			t.Errorf("%s %s: %d %q %q\nwant %d %q %q", st.method, st.path, status, ct, got, st.wantStatus, st.wantCT, st.want)
		}
	}
}

// TestM2Disabled: without [m2] the plugin is neither served nor listed.
func TestM2Disabled(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.M2.Enabled = false })
	for path, want := range map[string]string{
		"/features":    `["bmc"]`,
		"/m2/test":     "Requested url was not found",
		"/v2/features": `{"bmc":{"http_enabled":false,"https_enabled":true,"settings":{"bmc_default_provider":"ipmitool"},"state":"running","capabilities":["freeipmi","ipmitool","redfish"]}}`,
	} {
		if _, _, got := proxytest.Do(t, h.foreman, proxytest.ForemanRequest(h.ts.URL, "GET", path, "")); got != want {
			t.Errorf("GET %s = %q, want %q", path, got, want)
		}
	}
}

func TestSANURI(t *testing.T) {
	for _, tc := range []struct {
		t    m2.Target
		want string
	}{
		{m2.Target{Portal: "192.0.2.10:3260", IQN: "iqn.2026-11.io.malleable:acme.web1", LUN: 1}, "iscsi:192.0.2.10::3260:1:iqn.2026-11.io.malleable:acme.web1"},
		{m2.Target{Portal: "[2001:db8::5]:3261", IQN: "iqn.x:y", LUN: 10}, "iscsi:[2001:db8::5]::3261:a:iqn.x:y"},
		{m2.Target{Portal: "storage.example", IQN: "iqn.x:y", LUN: 1}, "iscsi:storage.example::3260:1:iqn.x:y"},
	} {
		if got := sanURI(tc.t); got != tc.want {
			t.Errorf("sanURI(%+v) = %q, want %q", tc.t, got, tc.want)
		}
	}
}
