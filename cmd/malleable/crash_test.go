package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// crashEnv names the point at which a crashtest binary kills itself.
const crashEnv = "MALLEABLE_TEST_CRASH_AT"

// crashBinary returns the malleable executable with its fault-injection
// hook (-tags crashtest), built beside the normal one once per test process.
func crashBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildCrashBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var buildCrashBinary = sync.OnceValues(func() (string, error) {
	bin := binary + "-crashtest"
	build := exec.Command("go", "build", "-tags", "crashtest", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -tags crashtest: %w\n%s", err, out)
	}
	return bin, nil
})

// crashPoints are every handover step boundary the appliance can die at.
func crashPoints() []string {
	var out []string
	for _, s := range lease.Steps {
		if s == lease.StepDone {
			continue
		}
		for _, phase := range []string{"intent", "acted", "done"} {
			out = append(out, string(s)+":"+phase)
		}
	}
	return out
}

// TestCrashSafety hands one real (simulated) server back and forth between
// two tenants, SIGKILLing the real appliance process at a random handover
// step boundary each time, then restarting it. After every crash the
// invariants must hold: the node is connected to at most one tenant's
// project, a holder's project is the one the node is in, no tenant whose
// lease is over or not yet activated can drive power, and the restarted
// appliance completes the handover with the node off.
func TestCrashSafety(t *testing.T) {
	iterations := 100
	if s := os.Getenv("MALLEABLE_CRASH_ITERATIONS"); s != "" {
		iterations, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		iterations = 10
	}
	crashBin := crashBinary(t)
	sim := bmctest.Start(t, bmctest.Options{})
	dir := t.TempDir()
	data := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "appliance.ini")
	os.WriteFile(cfg, []byte("[m2]\nenabled = false\n[leases]\nmin_duration = 1s\n[reconcile]\nschedule = @every 1h\nmax_attempts = 1000\npower_off_timeout = 20s\n[bmc]\ntimeout = 500ms\n"), 0o600)
	serveArgs := []string{"--config", cfg}

	d := startDaemon(t, data, serveArgs...)
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte(sim.Password+"\n"), 0o600)
	d.ok(t, "node", "add", "node-1", "--bmc", fmt.Sprintf("%s:%d", sim.Host, sim.Port), "--bmc-user", sim.User, "--bmc-password-file", pwFile)
	tokens := map[string]string{}
	for _, ten := range []string{"acme", "globex"} {
		d.ok(t, "tenant", "add", ten)
		tokens[ten] = strings.TrimSpace(d.ok(t, "tenant", "token", ten))
	}
	d.ok(t, "lease", "add", "--node", "node-1", "--tenant", "acme", "--duration", "24h")
	d.ok(t, "reconcile", "now")
	d.stop(t)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	points := crashPoints()
	holder, next := "acme", "globex"
	violations := 0
	for i := range iterations {
		point := points[rng.IntN(len(points))]
		t.Logf("iteration %d: %s → %s, crash at %s", i, holder, next, point)

		// The holder powers its node on, so the handover has real work.
		d = startDaemon(t, data, serveArgs...)
		waitHandoversDone(t, d)
		if code, body := broker(t, d, tokens[holder], "PUT", "power", `{"action":"on"}`); code != 200 {
			t.Fatalf("iteration %d: %s powers on its node: %d %s", i, holder, code, body)
		}
		waitSimPower(t, sim, true)
		leaseID := activeLeaseID(t, d)
		d.stop(t)

		// Arm the fault, end the holder's lease and start the next one.
		d = startDaemonEnv(t, crashBin, data, []string{crashEnv + "=" + point}, serveArgs...)
		d.ok(t, "lease", "cancel", leaseID)
		d.ok(t, "lease", "add", "--node", "node-1", "--tenant", next, "--duration", "24h")
		mark := len(sim.Commands())
		d.cli(t, "reconcile", "now") // the daemon dies during this pass
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("iteration %d: the appliance did not die at %s:\n%s", i, point, d.log)
		}
		if !strings.Contains(d.log.String(), "fault injection: SIGKILL at "+point) {
			t.Fatalf("iteration %d: died without reaching %s:\n%s", i, point, d.log)
		}

		// Restart: before the resumed handover completes, neither the
		// previous holder nor the next may drive power. The start-up pass
		// runs concurrently, so only the previous holder's refusal is
		// certain; the next tenant may already be activated.
		d = startDaemon(t, data, serveArgs...)
		if code, body := broker(t, d, tokens[holder], "PUT", "power", `{"action":"on"}`); code != 403 {
			t.Errorf("iteration %d (%s): previous holder %s powered on after its lease: %d %s", i, point, holder, code, body)
			violations++
		}
		waitHandoversDone(t, d)
		for _, c := range sim.Commands()[mark:] {
			if c.Op == "set" && !(c.Param == "power" && c.Value == "0") {
				t.Errorf("iteration %d (%s): BMC received %s %s=%s during the handover", i, point, c.Op, c.Param, c.Value)
				violations++
			}
		}
		if sim.PoweredOn() {
			t.Errorf("iteration %d (%s): node on after the handover", i, point)
			violations++
		}
		var p struct{ Holder string }
		json.Unmarshal([]byte(d.ok(t, "node", "power", "node-1", "-o", "json")), &p)
		if p.Holder != next {
			t.Errorf("iteration %d (%s): holder %q, want %q", i, point, p.Holder, next)
			violations++
		}
		if code, body := broker(t, d, tokens[holder], "GET", "power", ""); code != 200 || !strings.Contains(body, `"power": "off"`) {
			t.Errorf("iteration %d (%s): previous holder reads %d %s", i, point, code, body)
			violations++
		}
		d.stop(t)
		if violations > 0 {
			t.Fatalf("invariant violated at iteration %d (crash at %s)", i, point)
		}
		holder, next = next, holder
	}

	// Every handover completed, exactly one per boundary.
	d = startDaemon(t, data, serveArgs...)
	var hs []struct {
		Status string `json:"status"`
	}
	json.Unmarshal([]byte(d.ok(t, "lease", "handovers", "--limit", "10000", "-o", "json")), &hs)
	if len(hs) != iterations+1 {
		t.Errorf("%d handovers, want %d", len(hs), iterations+1)
	}
	for _, h := range hs {
		if h.Status != "done" {
			t.Errorf("a handover is %s", h.Status)
		}
	}
	d.stop(t)
	t.Logf("%d crash points, %d violations", iterations, violations)
}

// broker calls the broker API for node-1 with a tenant token.
func broker(t *testing.T, d *daemon, token, method, what, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+d.addr+"/broker/v1/nodes/node-1/"+what, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// waitHandoversDone polls until no handover is running or stuck.
func waitHandoversDone(t *testing.T, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var open []json.RawMessage
		json.Unmarshal([]byte(d.ok(t, "lease", "handovers", "--open", "-o", "json")), &open)
		if len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("handovers still open: %s\n%s", d.ok(t, "lease", "handovers", "--open"), d.log)
		}
		d.cli(t, "reconcile", "now")
		time.Sleep(50 * time.Millisecond)
	}
}

func activeLeaseID(t *testing.T, d *daemon) string {
	t.Helper()
	var ls []struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal([]byte(d.ok(t, "lease", "list", "--state", "active", "-o", "json")), &ls)
	if len(ls) != 1 {
		t.Fatalf("%d active leases, want 1", len(ls))
	}
	return strconv.FormatInt(ls[0].ID, 10)
}

func waitSimPower(t *testing.T, s *bmctest.Sim, on bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.PoweredOn() != on {
		if time.Now().After(deadline) {
			t.Fatalf("BMC power did not become %v", on)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProductionBinaryHasNoFaultInjection proves the fault-injection hook is
// compiled only into binaries built with -tags crashtest: the normal binary
// does not even contain the name of the variable that arms it.
func TestProductionBinaryHasNoFaultInjection(t *testing.T) {
	for _, c := range []struct {
		bin  string
		want bool
	}{{binary, false}, {crashBinary(t), true}} {
		b, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(crashEnv)); got != c.want {
			t.Errorf("%s contains %s: %v, want %v", c.bin, crashEnv, got, c.want)
		}
	}
}
