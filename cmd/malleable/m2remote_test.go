package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
)

// TestServeWithRemoteM2 runs the appliance on a standalone M2 backend
// ([m2] endpoint), which checks leases with the appliance ([m2]
// appliance): tenants reach their disks through the appliance only, an
// attach or a boot script needs the node to be held by the disk's project,
// a tenant cannot act for another by sending the project header, and the
// handover detaches the old tenant's disk on the backend.
func TestServeWithRemoteM2(t *testing.T) {
	requireTools(t, "tgtd", "ipmi_sim")
	work := t.TempDir()
	m2Port, portal := freeTCPPort(t), freeTCPPort(t)
	m2Addr := fmt.Sprintf("127.0.0.1:%d", m2Port)

	cfg := filepath.Join(work, "appliance.ini")
	os.WriteFile(cfg, []byte("[m2]\nendpoint = http://"+m2Addr+"\n"), 0o600)
	d := startDaemon(t, filepath.Join(work, "state"), "--config", cfg)
	token, err := os.ReadFile(filepath.Join(work, "state", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}

	// The storage host holds the appliance's admin token.
	m2Data := filepath.Join(work, "m2-state")
	os.MkdirAll(m2Data, 0o700)
	os.WriteFile(filepath.Join(m2Data, "admin.token"), token, 0o600)
	m2cfg := filepath.Join(work, "m2.ini")
	os.WriteFile(m2cfg, []byte(fmt.Sprintf("[m2]\nportal = 127.0.0.1:%d\ntgtd_control_port = %d\nappliance = http://%s\n",
		portal, 20000+portal%10000, d.addr)), 0o600)
	startM2Serve(t, m2cfg, m2Data, m2Addr)

	sim := bmctest.Start(t, bmctest.Options{})
	pw := filepath.Join(work, "bmc.password")
	os.WriteFile(pw, []byte(sim.Password+"\n"), 0o600)
	for i, n := range []string{"rack-1", "rack-2"} {
		d.ok(t, "node", "add", n, "--mac", fmt.Sprintf("52:54:00:fe:01:%02x", i+1), "--bmc", fmt.Sprintf("%s:%d", sim.Host, sim.Port),
			"--bmc-user", sim.User, "--bmc-password-file", pw)
	}
	for _, ten := range []string{"acme", "globex"} {
		d.ok(t, "tenant", "add", ten)
	}
	d.ok(t, "lease", "add", "--node", "rack-1", "--tenant", "acme", "--start", "now", "--duration", "2h")
	d.ok(t, "reconcile", "now")
	acme := strings.TrimSpace(d.ok(t, "tenant", "token", "acme"))
	globex := strings.TrimSpace(d.ok(t, "tenant", "token", "globex"))

	img := filepath.Join(work, "golden.img")
	os.WriteFile(img, append([]byte("golden"), make([]byte, 1<<20-6)...), 0o600)
	d.ok(t, "image", "import", "golden", "--file", img)

	call := func(base, tok, method, path, body string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+base+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	expect := func(what string, got int, body string, want int) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %d %s, want %d", what, got, body, want)
		}
	}

	// acme's disk, through the appliance.
	st, body := call(d.addr, acme, "POST", "/m2/v1/projects/acme/disks", `{"name":"web","image":"golden"}`)
	expect("acme creates a disk", st, body, 201)
	st, body = call(d.addr, globex, "GET", "/m2/v1/projects/acme/disks", "", "X-Malleable-Project", "acme")
	if st == 200 {
		t.Errorf("globex lists acme's disks by sending the project header: %d %s", st, body)
	}
	st, body = call(d.addr, globex, "GET", "/m2/v1/projects/globex/disks", "", "X-Malleable-Project", "acme")
	expect("globex lists its own disks", st, body, 200)
	if strings.Contains(body, `"web"`) {
		t.Errorf("globex, sending acme's project header, sees acme's disk: %s", body)
	}
	// The backend itself answers the appliance's token only.
	st, body = call(m2Addr, acme, "GET", "/m2/v1/projects/acme/disks", "", "X-Malleable-Project", "acme")
	expect("a tenant token straight at the backend", st, body, 401)

	// Attach needs the node held by the project; the backend asks the appliance.
	st, body = call(d.addr, acme, "POST", "/m2/v1/projects/acme/disks/web/attach", `{"node":"rack-2"}`)
	if st < 400 || st >= 500 {
		t.Errorf("acme attaches to rack-2, which it does not hold: %d %s, want a 4xx", st, body)
	}
	st, body = call(d.addr, acme, "POST", "/m2/v1/projects/acme/disks/web/attach", `{"node":"rack-1"}`)
	expect("acme attaches to rack-1", st, body, 200)
	var att struct {
		BootToken string `json:"boot_token"`
	}
	json.Unmarshal([]byte(body), &att)
	st, body = call(d.addr, "", "GET", "/m2/v1/boot/"+att.BootToken, "")
	expect("the node fetches its boot script", st, body, 200)
	if !strings.Contains(body, "sanboot") {
		t.Errorf("boot script without sanboot:\n%s", body)
	}

	// The lease ends: the handover detaches acme's disk on the backend
	// (kept), and the old boot token serves nothing.
	d.ok(t, "lease", "cancel", "--node", "rack-1", "--tenant", "acme")
	d.ok(t, "reconcile", "now")
	st, body = call(d.addr, acme, "GET", "/m2/v1/projects/acme/disks/web", "")
	expect("acme's disk is kept", st, body, 200)
	if strings.Contains(body, `"node"`) {
		t.Errorf("acme's disk still attached after the handover: %s", body)
	}
	st, body = call(d.addr, "", "GET", "/m2/v1/boot/"+att.BootToken, "")
	expect("the old boot token after the handover", st, body, 404)

	// Forwarded mutations are in the appliance's audit log.
	if out := d.ok(t, "audit", "list", "--limit", "50"); !strings.Contains(out, "m2.post") {
		t.Errorf("no m2.post in the audit log:\n%s", out)
	}
}
