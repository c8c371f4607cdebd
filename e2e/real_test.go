package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
	"github.com/malleable-cloud/malleable/templates/boottest"
)

// These tests run the smart-proxy against the in-process appliance of
// rig_test.go with its real ends instead of stand-ins: BMCs are OpenIPMI
// ipmi_sim processes whose chassis power is a qemu process, driven over
// IPMI 2.0 by appliance/bmc; disks are exported by a real tgtd and booted
// by a qemu node through iPXE. They skip when those tools are missing,
// unless MALLEABLE_REQUIRE_REAL=1.

// TestRealHandoverIPMI hands node-1 from acme to globex at a lease
// boundary, each tenant acting through its own smart-proxy as its Foreman
// would. acme powers the machine on during its lease; after the handover
// acme's proxy reads "off" and is refused while globex's reads the real
// state and powers the machine on. The BMC receives exactly acme's on,
// the handover's off and globex's on.
//
// Both simulated BMCs are 127.0.0.1 (on two ports), so Foreman's :host is
// the node name: the BMC address is refused as ambiguous.
func TestRealHandoverIPMI(t *testing.T) {
	sim1 := bmctest.Start(t, bmctest.Options{})
	sim2 := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	log := proxytest.Logger(t)
	a := newRealAppliance(t, realConfig{start: t0.Add(-time.Minute), sims: map[string]*bmctest.Sim{"node-1": sim1, "node-2": sim2},
		portal: "192.0.2.10:3260", targets: noTargets{}, log: log.With("side", "appliance")})
	acme, globex := newTenantProxy(t, a, "acme", log), newTenantProxy(t, a, "globex", log)
	a.lease("node-1", "acme", t0, time.Hour)
	a.lease("node-1", "globex", t0.Add(time.Hour), time.Hour)

	const status, powerOn = "/bmc/node-1/chassis/power/status", "/bmc/node-1/chassis/power/on"
	const on, off = `{"action":"status","result":"on"}`, `{"action":"status","result":"off"}`

	// acme's lease starts: the handover activates it, and acme drives the
	// real machine.
	a.boundary(t0, 1)
	s, b := acme.foreman("GET", status, "")
	expect(t, "acme status, machine off", s, b, 200, off)
	start := time.Now()
	s, b = acme.foreman("PUT", powerOn, "action=on")
	expect(t, "acme power on", s, b, 200, `{"action":"on","result":true}`)
	waitPower(t, sim1, true)
	t.Logf("acme's power on through its proxy, the broker and IPMI: machine up in %v", time.Since(start).Round(time.Millisecond))
	s, b = acme.foreman("GET", status, "")
	expect(t, "acme status, machine on", s, b, 200, on)
	// The real BMC address (both nodes' BMCs share 127.0.0.1) resolves to
	// nothing; the tenant-facing one to node-1 exactly.
	s, b = acme.foreman("GET", "/bmc/127.0.0.1/chassis/power/status", "")
	expect(t, "acme status by the real BMC address", s, b, 200, off)
	s, b = acme.foreman("GET", "/bmc/"+tenantBMCAddress(t, a, "node-1")+"/chassis/power/status", "")
	expect(t, "acme status by node-1's tenant-facing BMC address", s, b, 200, on)

	// globex, whose lease is next, reads off although the machine is on,
	// and its command never reaches the BMC.
	s, b = globex.foreman("GET", status, "")
	expect(t, "globex status during acme's lease", s, b, 200, off)
	s, b = globex.foreman("PUT", "/bmc/node-1/chassis/power/off", "action=off")
	expect(t, "globex power off during acme's lease", s, b, 400, "node node-1 is not leased to globex now; its next lease to globex starts 2026-12-01T10:00:00Z")
	if !sim1.PoweredOn() {
		t.Fatal("globex's refused power off turned the machine off")
	}

	// The lease boundary: the handover powers node-1 off at its BMC.
	a.boundary(t0.Add(time.Hour), 1)
	if sim1.PoweredOn() {
		t.Fatal("the handover left node-1's machine on")
	}
	s, b = acme.foreman("GET", status, "")
	expect(t, "acme status after the handover", s, b, 200, off)
	s, b = acme.foreman("PUT", powerOn, "action=on")
	expect(t, "acme power on after its lease", s, b, 400, "node node-1 is not leased to acme now and has no lease of it ahead")

	// globex reads the real state and powers the machine on.
	s, b = globex.foreman("GET", status, "")
	expect(t, "globex status after the handover", s, b, 200, off)
	s, b = globex.foreman("PUT", powerOn, "action=on")
	expect(t, "globex power on", s, b, 200, `{"action":"on","result":true}`)
	waitPower(t, sim1, true)
	s, b = globex.foreman("GET", status, "")
	expect(t, "globex status, machine on", s, b, 200, on)
	s, b = acme.foreman("GET", status, "")
	expect(t, "acme status while globex's machine is on", s, b, 200, off)
	s, b = acme.foreman("PUT", "/bmc/node-1/chassis/power/off", "action=off")
	expect(t, "acme power off globex's machine", s, b, 400, "not leased to acme now")
	if !sim1.PoweredOn() {
		t.Fatal("acme's refused power off turned globex's machine off")
	}
	// An independent IPMI client agrees.
	if out := sim1.IPMITool(t, "chassis", "power", "status"); !strings.Contains(out, "Chassis Power is on") {
		t.Fatalf("ipmitool chassis power status: %s", out)
	}

	// Only acme's on, the handover's off and globex's on reached the BMC;
	// nothing reached node-2's.
	want := []string{"set power 1", "set power 0", "set power 1"}
	if got := chassisSets(sim1); !slices.Equal(got, want) {
		t.Errorf("node-1's BMC received %q, want %q", got, want)
	}
	if got := chassisSets(sim2); len(got) != 0 {
		t.Errorf("node-2's BMC received %q, want nothing", got)
	}
}

// TestRealBootFromDisk provisions a node through globex's smart-proxy
// with real storage: a disk cloned from a golden image, exported by a real
// tgtd, attached to the node globex holds, whose boot script (fetched with
// the node's token through the proxy's boot route) a qemu node iPXE-boots
// into the image's boot sector. acme, the node's previous holder, and
// initech, which never leased it, cannot fetch that script through their
// proxies, and globex cannot attach a disk to a node it does not hold.
func TestRealBootFromDisk(t *testing.T) {
	tgtd := iscsitest.Start(t, iscsitest.Options{})
	sim1 := bmctest.Start(t, bmctest.Options{})
	sim2 := bmctest.Start(t, bmctest.Options{})
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	log := proxytest.Logger(t)
	// The qemu node reaches the host's loopback, where tgtd listens, as
	// 10.0.2.2.
	a := newRealAppliance(t, realConfig{start: t0.Add(-time.Minute), sims: map[string]*bmctest.Sim{"node-1": sim1, "node-2": sim2},
		portal: fmt.Sprintf("10.0.2.2:%d", tgtd.Portal().Port()), targets: tgtd.Driver(), log: log.With("side", "appliance")})
	const marker = "M2-SANBOOT-OK node-1 globex"
	if _, err := a.admin.M2().ImportImage(ctx, "golden", boottest.GoldenImage(t, "", 64<<20, marker)); err != nil {
		t.Fatal(err)
	}
	acme, globex := newTenantProxy(t, a, "acme", log), newTenantProxy(t, a, "globex", log)
	initech := newTenantProxy(t, a, "initech", log)
	a.lease("node-1", "acme", t0, time.Hour)
	a.lease("node-1", "globex", t0.Add(time.Hour), time.Hour)
	a.lease("node-2", "acme", t0, 2*time.Hour)

	// During acme's lease, acme's own disk on node-1 is served by its token;
	// globex cannot attach to a node it does not hold yet.
	a.boundary(t0, 2)
	s, b := acme.json("POST", "/m2/disks", `{"name":"a-root","image":"golden"}`)
	expect(t, "acme create_disk", s, b, 201, `"project":"acme","name":"a-root","source":"image:golden"`)
	s, b = acme.json("POST", "/m2/disks/a-root/attach", `{"node":"node-1"}`)
	expect(t, "acme attach", s, b, 200, `"node":"node-1"`)
	acmeToken := between(b, `"boot_token":"`, `"`)
	s, b = acme.bootScript(acmeToken)
	expect(t, "acme's boot script during its lease", s, b, 200, "sanboot")
	s, b = globex.json("GET", "/m2/image_list", "")
	expect(t, "globex image list", s, b, 200, `["golden"]`)
	s, b = globex.json("POST", "/m2/disks", `{"name":"b-root","image":"golden"}`)
	expect(t, "globex create_disk", s, b, 201, `"project":"globex","name":"b-root","source":"image:golden"`)
	s, b = globex.json("POST", "/m2/disks/b-root/attach", `{"node":"node-1"}`)
	expect(t, "globex attach before its lease", s, b, 403, "node node-1 is not held by globex")

	// The handover detaches acme's disk: acme's token is dead.
	a.boundary(t0.Add(time.Hour), 1)
	s, b = acme.bootScript(acmeToken)
	expect(t, "acme's own token after the handover", s, b, 404, "no boot script for this token")
	s, b = globex.json("POST", "/m2/disks/b-root/attach", `{"node":"node-2"}`)
	expect(t, "globex attach to acme's node-2", s, b, 403, "node node-2 is not held by globex")

	// globex attaches its disk to node-1, named by its MAC as Foreman knows
	// the host, and the node's script comes through the proxy's boot route.
	s, b = globex.json("POST", "/m2/disks/b-root/attach", `{"node":"52:54:00:00:00:01"}`)
	expect(t, "globex attach", s, b, 200, `"node":"node-1"`)
	token, initiator := between(b, `"boot_token":"`, `"`), between(b, `"initiator":"`, `"`)
	s, script := globex.bootScript(token)
	wantURI := fmt.Sprintf("iscsi:10.0.2.2::%d:1:iqn.2026-11.org.example:globex.b-root", tgtd.Portal().Port())
	expect(t, "node-1's boot script through globex's boot listener", s, script, 200, "sanboot --keep "+wantURI)
	s, b = globex.json("GET", "/m2/boot/"+token, "")
	expect(t, "node-1's boot script through globex's HTTPS listener", s, b, 200, "sanboot --keep "+wantURI)

	start := time.Now()
	node := boottest.BootISCSI(t, boottest.NodeOptions{Script: script})

	// While it boots: nobody else's proxy hands out that script (it holds
	// the disk's CHAP secret). Not fatal, so that the boot is proved
	// either way.
	for _, p := range []struct {
		name  string
		proxy *tenantProxy
	}{{"acme, the previous holder", acme}, {"initech, never a lessee", initech}} {
		s, b = p.proxy.bootScript(token)
		check(t, p.name+": globex's token through its boot listener", s, b, 404, "no boot script for this token")
		s, b = p.proxy.json("GET", "/m2/boot/"+token, "")
		check(t, p.name+": globex's token through its HTTPS listener", s, b, 404, "no boot script for this token")
	}

	wctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if err := node.WaitSerial(wctx, marker); err != nil {
		t.Fatal(err)
	}
	t.Logf("node-1 booted globex's disk in %v", time.Since(start).Round(time.Millisecond))
	// tgtd shows the node's session, under the initiator the attach named.
	ts, err := tgtd.Driver().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sessions []string
	for _, tg := range ts {
		for _, ss := range tg.Sessions {
			sessions = append(sessions, tg.IQN+" "+ss.Initiator)
		}
	}
	if want := "iqn.2026-11.org.example:globex.b-root " + initiator; !slices.Contains(sessions, want) {
		t.Errorf("tgtd sessions %q, want %q", sessions, want)
	}
}
