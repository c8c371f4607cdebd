package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/smartproxy"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// TestEndToEndHandover hands node-1 from acme to globex at a lease
// boundary through the real appliance. Before and after its lease acme's
// proxy reads "off" and is refused; globex reads the real state and
// powers the node on; the BMC receives only the lessee's and the
// handover's commands; acme's boot script stops being served.
func TestEndToEndHandover(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	log := proxytest.Logger(t)
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

// TestEndToEndCredentials: a proxy whose broker token is wrong cannot
// answer for any node, and says why; the BMC hears nothing.
func TestEndToEndCredentials(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	a := newApplianceRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), 0, log)
	p := newTenantProxy(t, a, "acme", log)
	bad := smartproxy.NewClient(a.url, "mlb_not-a-real-token-at-all", nil)
	// The same proxy configuration, served again over a client that
	// presents a token the appliance never issued.
	p.serve(bad, log)
	s, b := p.foreman("GET", "/bmc/198.18.0.5/chassis/power/status", "")
	expect(t, "status with a refused token", s, b, 400, "the appliance refused this smart-proxy's tenant credential")
	s, b = p.json("GET", "/m2/disks", "")
	expect(t, "M2 with a refused token", s, b, 502, "the appliance refused this smart-proxy's tenant credential")
	if _, err := smartproxy.Health(context.Background(), smartproxy.Config{Proxy: smartproxy.ProxyConfig{HTTPSListen: strings.TrimPrefix(p.url, "https://")},
		Broker: smartproxy.BrokerConfig{URL: a.url}}, bad.Broker); err == nil ||
		!strings.Contains(err.Error(), "does not take its credential") {
		t.Errorf("Health with a refused token: %v", err)
	}
	if got := a.bmc.commands(); len(got) != 0 {
		t.Errorf("BMC commands = %q", got)
	}
}
