package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/foreman/foremantest"
)

// The Foreman kit's images (../shared/foreman, built by its build.sh).
const (
	foremanImage   = foremantest.ForemanImage
	postgresImage  = foremantest.PostgresImage
	foremanCNReal  = "foreman.acme.test"
	foremanAdminPW = "foreman-admin-pw-0123"
)

// foremanBMCAddress is the address the tenant's Foreman stores on the
// host's BMC interface for node: its tenant-facing BMC address, which the
// broker resolves to the node (never the real BMC's address).
func foremanBMCAddress(t *testing.T, d *daemon, node string) string {
	t.Helper()
	var n struct {
		Address string `json:"tenant_bmc_address"`
	}
	if err := json.Unmarshal([]byte(d.ok(t, "node", "show", node, "-o", "json")), &n); err != nil || n.Address == "" {
		t.Fatalf("node show %s: no tenant_bmc_address (%v)", node, err)
	}
	return n.Address
}

// TestRealForeman drives the real Foreman 3.12 of the kit against the real
// binary's smart-proxy, made by `smart-proxy init`, in front of a real
// appliance and an ipmi_sim BMC: registration over mTLS imports BMC (and a
// proxy that does not trust Foreman's CN is refused), a host's BMC interface
// reads and drives the real power while the tenant holds the node, and after
// the handover Foreman reads Off and its power-on is refused, the reason in
// the proxy's log and the audit log.
func TestRealForeman(t *testing.T) {
	requireForemanKit(t)
	requireTools(t, "ipmi_sim", "qemu-system-x86_64")
	work := t.TempDir()

	// The appliance, one node with a real BMC, leased to acme now.
	d := startDaemon(t, filepath.Join(work, "state"))
	sim := bmctest.Start(t, bmctest.Options{})
	pw := filepath.Join(work, "bmc.password")
	os.WriteFile(pw, []byte(sim.Password+"\n"), 0o600)
	d.ok(t, "node", "add", "rack-1", "--mac", "52:54:00:fe:00:01", "--bmc", fmt.Sprintf("%s:%d", sim.Host, sim.Port),
		"--bmc-user", sim.User, "--bmc-password-file", pw)
	d.ok(t, "tenant", "add", "acme")
	d.ok(t, "lease", "add", "--node", "rack-1", "--tenant", "acme", "--start", "now", "--duration", "2h")
	d.ok(t, "reconcile", "now")

	// acme's smart-proxy, exactly as `smart-proxy init` writes it.
	proxyDir := filepath.Join(work, "acme-proxy")
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	d.ok(t, "smart-proxy", "init", "--dir", proxyDir, "--tenant", "acme", "--listen", proxyAddr,
		"--host", "127.0.0.1", "--foreman-cn", foremanCNReal)
	p := startProxy(t, filepath.Join(proxyDir, "smartproxy.ini"))
	// The same proxy trusting another CN only.
	ini, _ := os.ReadFile(filepath.Join(proxyDir, "smartproxy.ini"))
	otherAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	other := strings.NewReplacer("trusted_hosts = "+foremanCNReal, "trusted_hosts = foreman.globex.test",
		"https_listen = "+proxyAddr, "https_listen = "+otherAddr).Replace(string(ini))
	otherINI := filepath.Join(proxyDir, "untrusting.ini")
	os.WriteFile(otherINI, []byte(other), 0o600)
	startProxy(t, otherINI)

	f := startForeman(t, proxyDir)
	bmcPassword, _ := os.ReadFile(filepath.Join(proxyDir, "bmc.password"))

	org, loc := f.id(t, "organizations", "Malleable"), f.id(t, "locations", "Lab")
	scope := map[string]any{"organization_ids": []int{org}, "location_ids": []int{loc}}
	with := func(m map[string]any) map[string]any {
		for k, v := range scope {
			m[k] = v
		}
		return m
	}

	// Registration over mTLS: Foreman reads /v2/features and imports BMC.
	start := time.Now()
	status, body := f.call(t, "POST", "/api/smart_proxies", map[string]any{"smart_proxy": with(map[string]any{
		"name": "malleable-acme", "url": "https://" + proxyAddr})})
	t.Logf("POST /api/smart_proxies: %d in %s", status, time.Since(start).Round(time.Millisecond))
	if status != 201 && status != 200 {
		t.Fatalf("register the proxy: %d %s\n--- proxy log ---\n%s", status, body, p.log)
	}
	var sp struct {
		ID       int `json:"id"`
		Features []struct {
			Name         string   `json:"name"`
			Capabilities []string `json:"capabilities"`
		} `json:"features"`
	}
	json.Unmarshal(body, &sp)
	var names []string
	for _, ft := range sp.Features {
		names = append(names, ft.Name)
	}
	if strings.Join(names, ",") != "BMC" {
		t.Errorf("features imported: %v, want BMC (M2 is off in this appliance)", names)
	}
	status, body = f.call(t, "POST", "/api/smart_proxies", map[string]any{"smart_proxy": with(map[string]any{
		"name": "malleable-untrusting", "url": "https://" + otherAddr})})
	if status != 422 || !strings.Contains(string(body), "Unable to detect features") {
		t.Errorf("register a proxy that does not trust Foreman's CN: %d %s, want 422 Unable to detect features", status, body)
	}
	t.Logf("untrusting proxy: %d %s", status, body)

	// A subnet with the proxy as its BMC proxy, and a host with an IPMI BMC
	// interface whose identity is the proxy's virtual one.
	addr := foremanBMCAddress(t, d, "rack-1")
	status, body = f.call(t, "POST", "/api/subnets", map[string]any{"subnet": with(map[string]any{
		"name": "bmc-net", "network": "198.18.0.0", "mask": "255.254.0.0", "ipam": "None", "boot_mode": "Static",
		"bmc_id": sp.ID})})
	if status != 201 && status != 200 {
		t.Fatalf("create the subnet: %d %s", status, body)
	}
	var subnet struct{ ID int }
	json.Unmarshal(body, &subnet)
	status, body = f.call(t, "POST", "/api/hosts", map[string]any{"host": map[string]any{
		"name": "rack-1", "managed": false, "organization_id": org, "location_id": loc,
		"interfaces_attributes": []map[string]any{
			{"type": "interface", "primary": true, "provision": true, "managed": false, "mac": "52:54:00:fe:00:01", "identifier": "eth0"},
			{"type": "bmc", "managed": false, "provider": "IPMI", "ip": addr, "subnet_id": subnet.ID,
				"username": "acme", "password": strings.TrimSpace(string(bmcPassword))},
		}}})
	if status != 201 && status != 200 {
		t.Fatalf("create the host: %d %s", status, body)
	}
	var host struct{ ID int }
	json.Unmarshal(body, &host)
	hostPath := fmt.Sprintf("/api/hosts/%d", host.ID)

	// While acme holds rack-1, Foreman reads and drives the real BMC.
	power := func() string {
		t.Helper()
		start := time.Now()
		status, body := f.call(t, "GET", hostPath+"/power", nil)
		t.Logf("GET %s/power: %d %s in %s", hostPath, status, body, time.Since(start).Round(time.Millisecond))
		var out struct{ State string }
		json.Unmarshal(body, &out)
		return out.State
	}
	if got := power(); got != "off" {
		t.Errorf("power of a held node that is off = %q, want off", got)
	}
	status, body = f.call(t, "PUT", hostPath+"/power", map[string]any{"power_action": "on"})
	if status != 200 || !strings.Contains(string(body), `"power":true`) {
		t.Fatalf("power on while held: %d %s\n--- proxy log ---\n%s", status, body, p.log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sim.WaitPower(ctx, true); err != nil {
		t.Fatalf("the BMC never powered on: %v", err)
	}
	if got := power(); got != "on" {
		t.Errorf("power of a held node that is on = %q, want on", got)
	}

	// The lease ends and the handover powers the node off: Foreman reads
	// Off, and its power-on is refused and never reaches the BMC.
	d.ok(t, "lease", "cancel", "--node", "rack-1", "--tenant", "acme")
	d.ok(t, "reconcile", "now")
	if got := power(); got != "off" {
		t.Errorf("power after the handover = %q, want off", got)
	}
	ons := len(sim.PowerOns())
	status, body = f.call(t, "PUT", hostPath+"/power", map[string]any{"power_action": "on"})
	t.Logf("power on after the handover: %d %s", status, body)
	if status != 500 || !strings.Contains(string(body), "ERF12-1772") || !strings.Contains(string(body), "Unable to perform power BMC operation") ||
		!strings.Contains(string(body), "400 Bad Request") {
		t.Errorf("power on after the handover: %d %s, want Foreman's refusal", status, body)
	}
	if strings.Contains(string(body), "not leased to acme") {
		t.Errorf("Foreman passed the proxy's error body on; the README says it drops it: %s", body)
	}
	if n := len(sim.PowerOns()); n != ons || sim.PoweredOn() {
		t.Errorf("a refused power on reached the BMC (%d power-ons, was %d)", n, ons)
	}
	if !strings.Contains(p.log.String(), "not leased to acme now") {
		t.Errorf("the proxy's log lacks the refusal's reason:\n%s", p.log)
	}
	if audit := d.ok(t, "audit", "list"); !strings.Contains(audit, "not leased to acme now") {
		t.Errorf("the audit log lacks the refusal's reason:\n%s", audit)
	}
}

// requireForemanKit skips the test, loudly, without Docker or the kit's
// requireForemanKit skips (or, under MALLEABLE_REQUIRE_REAL=1, fails) a
// test without the kit's Foreman images.
func requireForemanKit(t *testing.T) { foremantest.RequireKit(t) }

// foreman is a running Foreman of the kit and its API's admin login.
type foreman struct {
	url  string
	http *http.Client
}

// startForeman runs the kit's Foreman (foremantest.StartReal) with the
// client certificate and CA `smart-proxy init` wrote in proxyDir.
func startForeman(t *testing.T, proxyDir string) *foreman {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(proxyDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	in := foremantest.StartReal(t, foremantest.Options{AdminPassword: foremanAdminPW, Organization: "Malleable", Location: "Lab",
		ClientCertPEM: read("foreman.crt"), ClientKeyPEM: read("foreman.key"), ProxyCAPEM: read("ca.crt")})
	return &foreman{url: in.URL, http: &http.Client{Timeout: 90 * time.Second}}
}

// call sends a JSON request to Foreman's API v2 as its admin and returns
// the status and body.
func (f *foreman) call(t *testing.T, method, path string, in any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.url+path, body)
	req.SetBasicAuth("admin", foremanAdminPW)
	req.Header.Set("Accept", "application/json,version=2")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// id returns the id of the organization or location named name.
func (f *foreman) id(t *testing.T, kind, name string) int {
	t.Helper()
	status, body := f.call(t, "GET", "/api/"+kind+"?search=name%3D%22"+name+"%22", nil)
	var out struct {
		Results []struct{ ID int } `json:"results"`
	}
	if err := json.Unmarshal(body, &out); status != 200 || err != nil || len(out.Results) != 1 {
		t.Fatalf("GET /api/%s named %s: %d %s", kind, name, status, body)
	}
	return out.Results[0].ID
}
