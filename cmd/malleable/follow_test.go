package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
)

// TestCLIFollowsPassAndRetry runs `reconcile now` and `lease retry` against
// a real appliance and a simulated BMC (ipmi_sim): the CLI prints each
// handover step as it ends and the pass's summary, exits 1 when a
// handover gets stuck (here: a wrong BMC password), and `lease retry`
// follows the retried handover to its end once the password is fixed.
func TestCLIFollowsPassAndRetry(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "appliance.ini")
	// No scheduled pass during the test: every pass is the CLI's.
	os.WriteFile(cfg, []byte("[m2]\nenabled = false\n[reconcile]\nschedule = @every 1h\nmax_attempts = 1\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "state"), "--config", cfg)
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-password\n"), 0o600)
	right := filepath.Join(dir, "right")
	os.WriteFile(right, []byte(sim.Password+"\n"), 0o600)

	// rack-1 is on (a real qemu behind ipmi_sim), then its password is
	// changed to one its BMC refuses.
	d.ok(t, "node", "add", "rack-1", "--bmc", fmt.Sprintf("%s:%d", sim.Host, sim.Port), "--bmc-user", sim.User, "--bmc-password-file", right)
	d.ok(t, "node", "power", "rack-1", "on")
	d.ok(t, "node", "set-bmc-password", "rack-1", "--password-file", wrong)
	d.ok(t, "node", "add", "rack-2", "--mac", "52:54:00:aa:00:02")
	d.ok(t, "tenant", "add", "alpha")
	d.ok(t, "lease", "add", "--node", "rack-2", "--tenant", "alpha", "--start", "now", "--duration", "1h")

	// A pass that hands rack-2 (no BMC) to alpha: every step, then the summary.
	out := d.ok(t, "reconcile", "now")
	for _, re := range []string{
		`(?m)^pass \d+ started$`,
		`(?m)^handover 1 rack-2 \(free\) → alpha: fence … done \(\d+\.\ds\)$`,
		`(?m)^handover 1 rack-2 \(free\) → alpha: power_off … skipped: `,
		`(?m)^handover 1 rack-2 \(free\) → alpha: detach … skipped: node was free$`,
		`(?m)^handover 1 rack-2 \(free\) → alpha: connect … done \(\d+\.\ds\)$`,
		`(?m)^handover 1 rack-2 \(free\) → alpha: activate … done \(\d+\.\ds\)$`,
		`(?m)^pass \d+ done in \d+\.\ds: 2 nodes; 1 started, 0 resumed, 1 completed, 0 failed, 0 stuck, 0 drift$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("reconcile now output does not match %s:\n%s", re, out)
		}
	}

	// rack-1's BMC refuses the appliance's password: the power-off step
	// fails, the handover is stuck ([reconcile] max_attempts = 1), and the
	// CLI says so and exits 1.
	d.ok(t, "lease", "add", "--node", "rack-1", "--tenant", "alpha", "--start", "now", "--duration", "1h")
	out, errOut, code := d.cli(t, "reconcile", "now")
	if code != 1 || !regexp.MustCompile(`(?m)^handover 2 rack-1 \(free\) → alpha: power_off … failed \(\d+\.\ds, attempt 1\): `).MatchString(out) ||
		!strings.Contains(out, "stuck at power_off: fix the cause, then: malleable lease retry 2") ||
		!strings.Contains(errOut, "handover 2 rack-1 (free) → alpha did not finish: stuck at power_off") {
		t.Errorf("reconcile now with a stuck handover: exit %d\n%s%s", code, out, errOut)
	}

	// Fixed: the retry runs in the appliance and the CLI follows it while
	// ipmi_sim really powers the machine off.
	d.ok(t, "node", "set-bmc-password", "rack-1", "--password-file", right)
	out = d.ok(t, "lease", "retry", "2")
	t.Logf("malleable lease retry 2:\n%s", out)
	for _, re := range []string{
		`(?m)^handover 2 of rack-1 is running again; pass \d+ resumes it$`,
		`(?m)^handover 2 rack-1 \(free\) → alpha: power_off … done \(\d+\.\ds\)$`,
		`(?m)^handover 2 rack-1 \(free\) → alpha: activate … done \(\d+\.\ds\)$`,
		`(?m)^2\s+rack-1\s+-\s+alpha\s+done\s+done\s`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("lease retry output does not match %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "handover 1 ") {
		t.Errorf("lease retry reported another handover:\n%s", out)
	}
	if sim.PoweredOn() {
		t.Error("rack-1 is still on after its handover")
	}

	// --no-wait returns at once with the pass's id; show finds it.
	out = d.ok(t, "reconcile", "now", "--no-wait")
	m := regexp.MustCompile(`follow it with: malleable reconcile show (\d+) --follow`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("reconcile now --no-wait:\n%s", out)
	}
	if out := d.ok(t, "reconcile", "show", m[1], "--follow"); !strings.Contains(out, "pass "+m[1]+" done in") {
		t.Errorf("reconcile show --follow:\n%s", out)
	}
	// Every request is in the audit log, with the pass it got.
	if out := d.ok(t, "audit", "list"); !strings.Contains(out, "reconcile.request") || !regexp.MustCompile(`handover\.retry\s+handover/2\s+ok`).MatchString(out) {
		t.Errorf("audit list:\n%s", out)
	}
}
