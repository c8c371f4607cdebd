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
	"github.com/malleable-cloud/malleable/appliance/secrets/vault/vaulttest"
)

// foremanAPI calls a tenant's Foreman API as its admin.
type foremanAPI struct {
	url, user, password string
}

func (f foremanAPI) get(t *testing.T, path string) (int, string) {
	t.Helper()
	st, body, err := f.try(path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return st, body
}

// try is get for a Foreman that may not be answering yet.
func (f foremanAPI) try(path string) (int, string, error) {
	req, _ := http.NewRequest("GET", f.url+path, nil)
	req.SetBasicAuth(f.user, f.password)
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
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
// the real Foreman 3.12 of the kit, with the embedded secret store and CA
// and with a real Vault: `tenant add` follows the job's steps to the end;
// the tenant's Foreman holds its smart-proxy with the BMC feature and a
// host for the node it leases, whose power it reads through the proxy and
// the broker; the Foreman login is shown once; with the embedded store, a
// removed proxy and a stopped Foreman are restored by the drift pass and a
// restarted appliance adopts its running containers; offboarding leaves
// nothing labelled for the tenant.
func TestTenantOnboarding(t *testing.T) {
	requireForemanKit(t)
	requireTools(t, "ipmi_sim")
	t.Run("embedded", func(t *testing.T) { onboardOne(t, nil) })
	t.Run("vault", func(t *testing.T) { onboardOne(t, vaulttest.Start(t)) })
}

// onboardOne onboards one tenant and offboards it, its secrets in v when
// set, else in the embedded store.
func onboardOne(t *testing.T, v *vaulttest.Server) {
	work := t.TempDir()
	b := make([]byte, 3)
	rand.Read(b)
	tenant := "onb-" + hex.EncodeToString(b)

	conf := fmt.Sprintf(`[m2]
enabled = false
[tenants]
runtime = docker
foreman_image = %s
postgres_image = %s
broker_port = %d
drift_interval = 2s
`, foremanImage, postgresImage, freeTCPPort(t))
	if v != nil {
		tok := filepath.Join(work, "vault.token")
		os.WriteFile(tok, []byte(v.RootToken+"\n"), 0o600)
		conf += fmt.Sprintf("[vault]\naddress = %s\ntoken_file = %s\n", v.Addr, tok)
	}
	cfg := filepath.Join(work, "appliance.ini")
	os.WriteFile(cfg, []byte(conf), 0o600)
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

	if v != nil {
		checkVault(t, v, tenant)
		// Vault stops: a new onboarding fails, saying so, while the
		// running tenant's Foreman keeps reading its node's power.
		v.Stop()
		other := tenant + "-b"
		out, errOut, code := d.cli(t, "tenant", "add", other)
		if code == 0 || !strings.Contains(out+errOut, "secrets") || !strings.Contains(strings.ToLower(out+errOut), "vault") {
			t.Errorf("onboarding with Vault stopped: exit %d\n%s%s", code, out, errOut)
		}
		t.Logf("onboarding with Vault stopped:\n%s%s", out, errOut)
		if st, body := f.get(t, "/api/hosts/rack-1/power"); st != 200 {
			t.Errorf("the running tenant's power with Vault stopped: %d %s", st, body)
		}
		return // offboarding needs Vault: the cleanup removes the containers
	} else {
		checkActivateHost(t, d, tenant, f, sim, pw)
		d = checkDrift(t, d, tenant, f, work, cfg)
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

// containerStarts maps the tenant's containers to when they started.
func containerStarts(t *testing.T, tenant string) map[string]string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "--filter", "label=malleable.tenant="+tenant, "--format", "{{.Names}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	starts := map[string]string{}
	for _, name := range strings.Fields(string(out)) {
		at, _ := exec.Command("docker", "inspect", "-f", "{{.State.StartedAt}}", name).Output()
		starts[name] = strings.TrimSpace(string(at))
	}
	return starts
}

// checkActivateHost leases a second node to the onboarded tenant: the
// handover's activate step makes its host in the tenant's Foreman, with
// its power readable there at once.
func checkActivateHost(t *testing.T, d *daemon, tenant string, f foremanAPI, sim *bmctest.Sim, pw string) {
	t.Helper()
	if st, _ := f.get(t, "/api/hosts/rack-2"); st != 404 {
		t.Fatalf("rack-2 is a host before its lease: %d", st)
	}
	d.ok(t, "node", "add", "rack-2", "--mac", "52:54:00:fe:02:02", "--bmc", fmt.Sprintf("%s:%d", sim.Host, sim.Port),
		"--bmc-user", sim.User, "--bmc-password-file", pw)
	d.ok(t, "lease", "add", "--node", "rack-2", "--tenant", tenant, "--start", "now", "--duration", "1h")
	d.ok(t, "reconcile", "now")
	st, body := f.get(t, "/api/hosts/rack-2/power")
	if st != 200 || !strings.Contains(body, `"state":"o`) {
		t.Errorf("rack-2 after its handover to %s: %d %s (want its host made at the activate step)", tenant, st, body)
	}
}

// checkDrift removes the tenant's smart-proxy and stops its Foreman, and
// waits for the drift pass to restore both; then restarts the appliance,
// which adopts the running containers without restarting them, and
// returns the new daemon.
func checkDrift(t *testing.T, d *daemon, tenant string, f foremanAPI, work, cfg string) *daemon {
	t.Helper()
	proxy, fm := "malleable-"+tenant+"-smart-proxy", "malleable-"+tenant+"-foreman"
	if out, err := exec.Command("docker", "rm", "-f", proxy).CombinedOutput(); err != nil {
		t.Fatalf("remove the proxy: %v %s", err, out)
	}
	if out, err := exec.Command("docker", "stop", fm).CombinedOutput(); err != nil {
		t.Fatalf("stop Foreman: %v %s", err, out)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		starts := containerStarts(t, tenant)
		if len(starts) == 2 {
			if st, _, _ := f.try("/api/hosts/rack-1/power"); st == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("drift did not restore the tenant: running %v\n%s", starts, d.log)
		}
		time.Sleep(time.Second)
	}

	// A new broker token reaches the running proxy: drift redeploys it
	// with the token the store now checks.
	old := containerStarts(t, tenant)[proxy]
	d.ok(t, "tenant", "token", tenant)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		now := containerStarts(t, tenant)[proxy]
		st, _, _ := f.try("/api/hosts/rack-1/power")
		if now != "" && now != old && st == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy was not redeployed with its new token (started %s, was %s; power %d)\n%s", now, old, st, d.log)
		}
		time.Sleep(time.Second)
	}

	before := containerStarts(t, tenant)
	d.stop(t)
	d = startDaemon(t, filepath.Join(work, "state"), "--config", cfg)
	time.Sleep(5 * time.Second) // two drift passes
	if after := containerStarts(t, tenant); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the restarted appliance restarted containers:\nbefore %v\nafter  %v", before, after)
	}
	// The proxy reaches the broker again through the restored listener.
	deadline = time.Now().Add(time.Minute)
	for {
		st, body, err := f.try("/api/hosts/rack-1/power")
		if st == 200 && strings.Contains(body, `"state":"o`) {
			break
		}
		if err != nil {
			body = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("power after the restart: %d %s\n%s", st, body, d.log)
		}
		time.Sleep(time.Second)
	}
	return d
}

// checkVault: the tenant's secrets are at the documented paths in Vault's
// KV, and its certificates came from Vault's PKI.
func checkVault(t *testing.T, v *vaulttest.Server, tenant string) {
	t.Helper()
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", v.Addr+path, nil)
		req.Header.Set("X-Vault-Token", v.RootToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, name := range []string{"foreman/admin-password", "database/password", "broker/token", "bmc/password", "certs/proxy.crt"} {
		if st, body := get("/v1/secret/data/malleable/tenants/" + tenant + "/" + name); st != 200 {
			t.Errorf("Vault secret %s: %d %s", name, st, body)
		}
	}
	if st, body := get("/v1/pki/certs?list=true"); st != 200 || !strings.Contains(body, "keys") {
		t.Errorf("Vault PKI issued nothing: %d %s", st, body)
	}
}
