package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestM2Audit: every M2 mutation through the appliance — image import and
// rm, disk create, attach, detach, snapshot and rm — lands in the audit
// log with its actor and outcome, refused ones too.
func TestM2Audit(t *testing.T) {
	requireTools(t, "tgtd", "tgtadm")
	dir := t.TempDir()
	portal := freeTCPPort(t)
	cfg := filepath.Join(dir, "m2.ini")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[m2]\nportal = 127.0.0.1:%d\ntgtd_control_port = %d\n", portal, 20000+portal%10000)), 0o600)
	d := startDaemon(t, filepath.Join(dir, "state"), "--config", cfg)
	img := filepath.Join(dir, "golden.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)

	d.ok(t, "image", "import", "golden", "--file", img)
	if _, _, code := d.cli(t, "image", "import", "golden", "--file", img); code != 1 {
		t.Errorf("second import of golden: exit %d, want 1", code)
	}
	d.ok(t, "disk", "create", "acme", "web-1", "--image", "golden")
	if _, _, code := d.cli(t, "disk", "attach", "acme", "web-1", "--node", "nobody-holds-me"); code != 1 {
		t.Errorf("attach to a node acme does not hold: exit %d, want 1", code)
	}
	d.ok(t, "disk", "detach", "acme", "web-1")
	d.ok(t, "disk", "snapshot", "acme", "web-1", "web-1-base")
	d.ok(t, "disk", "rm-snapshot", "acme", "web-1-base")
	d.ok(t, "disk", "rm", "acme", "web-1")
	d.ok(t, "image", "rm", "golden")

	var log []struct{ Actor, Action, Target, Detail, Result string }
	if err := json.Unmarshal([]byte(d.ok(t, "audit", "list", "-o", "json")), &log); err != nil {
		t.Fatal(err)
	}
	want := []struct{ action, target, result string }{ // oldest first
		{"image.import", "image/golden", "ok"},
		{"image.import", "image/golden", "refused (409)"},
		{"disk.create", "disk/acme/web-1", "ok"},
		{"disk.attach", "disk/acme/web-1", "refused (403)"},
		{"disk.detach", "disk/acme/web-1", "ok"},
		{"snapshot.create", "snapshot/acme/web-1-base", "ok"},
		{"snapshot.rm", "snapshot/acme/web-1-base", "ok"},
		{"disk.rm", "disk/acme/web-1", "ok"},
		{"image.rm", "image/golden", "ok"},
	}
	var got []string
	for i := len(log) - 1; i >= 0; i-- {
		if e := log[i]; strings.HasPrefix(e.Action, "image.") || strings.HasPrefix(e.Action, "disk.") || strings.HasPrefix(e.Action, "snapshot.") {
			got = append(got, e.Actor+" "+e.Action+" "+e.Target+" "+e.Result)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("audit log has %d M2 entries, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], "admin "+w.action+" "+w.target+" "+w.result) {
			t.Errorf("audit entry %d = %q, want admin %s %s %s...", i, got[i], w.action, w.target, w.result)
		}
	}
	d.stop(t)
}
