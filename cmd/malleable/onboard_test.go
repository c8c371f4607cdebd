package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
)

// foremanAPI calls a tenant's Foreman API as its admin.
type foremanAPI struct {
	url, user, password string
}

func (f foremanAPI) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.url+path, nil)
	req.SetBasicAuth(f.user, f.password)
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// labelled lists the containers and networks Docker holds with a label.
func labelled(t *testing.T, label string) string {
	t.Helper()
	var out []string
	for _, args := range [][]string{{"ps", "-a", "--format", "{{.Names}}"}, {"network", "ls", "--format", "{{.Name}}"}} {
		b, err := exec.Command("docker", append(args, "--filter", "label="+label)...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %v: %v\n%s", args, err, b)
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, "\n")
}

// TestTenantOnboarding onboards a tenant on the real Docker engine with
// the real Foreman 3.12 of the kit: `tenant add` follows the job's steps
// to the end; the tenant's Foreman holds its smart-proxy with the BMC
// feature and a host for the node it leases, whose power it reads through
// the proxy and the broker; the Foreman login is shown once; offboarding
// leaves nothing labelled for the tenant.
func TestTenantOnboarding(t *testing.T) {
	requireForemanKit(t)
	requireTools(t, "ipmi_sim")
	work := t.TempDir()
	b := make([]byte, 3)
	rand.Read(b)
	tenant := "onb-" + hex.EncodeToString(b)

	cfg := filepath.Join(work, "appliance.ini")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[m2]
enabled = false
[tenants]
runtime = docker
foreman_image = %s
postgres_image = %s
broker_port = %d
`, foremanImage, postgresImage, freeTCPPort(t))), 0o600)
	d := startDaemon(t, filepath.Join(work, "state"), "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("appliance log:\n%s", d.log)
		}
		// Whatever a failure left of the tenant's.
		ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=malleable.tenant="+tenant).Output()
		for _, id := range strings.Fields(string(ids)) {
			exec.Command("docker", "rm", "-f", "-v", id).Run()
		}
		ids, _ = exec.Command("docker", "network", "ls", "-q", "--filter", "label=malleable.tenant="+tenant).Output()
		for _, id := range strings.Fields(string(ids)) {
			exec.Command("docker", "network", "rm", id).Run()
		}
	})

	sim := bmctest.Start(t, bmctest.Options{})
	pw := filepath.Join(work, "bmc.password")
	os.WriteFile(pw, []byte(sim.Password+"\n"), 0o600)
	d.ok(t, "node", "add", "rack-1", "--mac", "52:54:00:fe:02:01", "--bmc", fmt.Sprintf("%s:%d", sim.Host, sim.Port),
		"--bmc-user", sim.User, "--bmc-password-file", pw)

	// The tenant exists before its onboarding so that it can lease first:
	// onboarding then makes a host for the leased node.
	start := time.Now()
	out := d.ok(t, "tenant", "add", tenant, "--no-wait")
	if !strings.Contains(out, "started") {
		t.Fatalf("tenant add --no-wait: %s", out)
	}
	d.ok(t, "lease", "add", "--node", "rack-1", "--tenant", tenant, "--start", "now", "--duration", "2h")
	d.ok(t, "reconcile", "now")
	// A second onboarding while the first runs is the same job.
	if again := d.ok(t, "tenant", "onboard", tenant, "--no-wait"); !strings.Contains(again, "job 1 of") {
		t.Errorf("a second onboarding while the first runs: %s, want job 1", again)
	}
	out = d.ok(t, "tenant", "job", tenant, "1", "--follow")
	t.Logf("onboarding took %s:\n%s", time.Since(start).Round(time.Second), out)
	for _, step := range []string{"network", "secrets", "certificates", "database", "foreman", "smart-proxy", "health", "bootstrap"} {
		if !strings.Contains(out, "[ok ] "+step) {
			t.Errorf("step %s not done:\n%s", step, out)
		}
	}
	if jobs := d.ok(t, "tenant", "jobs", tenant); strings.Count(jobs, "onboard") != 1 {
		t.Errorf("one onboarding wanted:\n%s", jobs)
	}

	// The Foreman login, once.
	var login struct {
		URL      string `json:"foreman_url"`
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := json.Unmarshal([]byte(d.ok(t, "tenant", "credentials", tenant, "-o", "json")), &login); err != nil || login.Password == "" {
		t.Fatalf("credentials: %+v %v", login, err)
	}
	if _, errOut, code := d.cli(t, "tenant", "credentials", tenant); code == 0 || !strings.Contains(errOut, "already shown") {
		t.Errorf("credentials a second time: exit %d %s", code, errOut)
	}
	if show := d.ok(t, "tenant", "show", tenant); !strings.Contains(show, login.URL) || !strings.Contains(show, "ready") {
		t.Errorf("tenant show: %s (want ready at %s)", show, login.URL)
	}

	f := foremanAPI{url: login.URL, user: login.Username, password: login.Password}
	if st, _ := (foremanAPI{url: login.URL, user: "admin", password: "wrong-password"}).get(t, "/api/hosts"); st != 401 {
		t.Errorf("a wrong password: %d, want 401", st)
	}
	st, body := f.get(t, "/api/smart_proxies?search=name%3Dmalleable-"+tenant)
	if st != 200 || !strings.Contains(body, `"BMC"`) {
		t.Errorf("smart proxies: %d %s", st, body)
	}
	st, body = f.get(t, "/api/hosts/rack-1/power")
	if st != 200 || !strings.Contains(body, `"state":"on"`) && !strings.Contains(body, `"state":"off"`) {
		t.Errorf("rack-1's power through the tenant's Foreman: %d %s", st, body)
	}

	// Offboarding ends the lease and leaves nothing of the tenant's.
	out = d.ok(t, "tenant", "offboard", tenant)
	t.Logf("offboarding:\n%s", out)
	if left := labelled(t, "malleable.tenant="+tenant); left != "" {
		t.Errorf("left after offboarding:\n%s", left)
	}
	if show := d.ok(t, "tenant", "show", tenant); !strings.Contains(show, "registered") {
		t.Errorf("tenant after offboarding: %s", show)
	}
}
