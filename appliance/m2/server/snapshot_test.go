package server_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

// TestSnapshots proves fast re-provisioning: a snapshot of a disk that a
// node has written to, through a real initiator, is the disk as it was;
// a disk created from it (same project) has exactly that content, also
// after the source disk changed and was deleted; another project cannot
// use it.
func TestSnapshots(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	_, golden := e.importImage("golden", imageSize, "M2-SNAPSHOT")
	web := e.createDisk("acme", "web", "golden")
	_, boot := e.attach("acme", "web", "n1")
	login := e.login(web.Target.IQN, boot)

	writeLUN(t, login, 0xa5, 8<<20, 1<<20)
	written := readLUN(t, login)
	if written == golden {
		t.Fatal("the write through iSCSI changed nothing")
	}
	var snap m2.Snapshot
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/projects/acme/disks/web/snapshots", "project:acme", map[string]string{"name": "s1"}, &snap)
	if snap.Project != "acme" || snap.Name != "s1" || snap.Disk != "web" || snap.Size != imageSize {
		t.Fatalf("snapshot %+v", snap)
	}
	writeLUN(t, login, 0x5a, 9<<20, 1<<20) // after the snapshot: not in it

	var restored m2.Disk
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/projects/acme/disks", "project:acme",
		map[string]string{"name": "restored", "snapshot": "s1"}, &restored)
	if restored.Source != "snapshot:s1" || restored.Size != imageSize {
		t.Fatalf("disk from snapshot: %+v", restored)
	}
	_, rboot := e.attach("acme", "restored", "n2")
	if got := readLUN(t, e.login(restored.Target.IQN, rboot)); got != written {
		t.Fatalf("disk from snapshot: sha256 %s, want the disk's at snapshot time %s", got, written)
	}

	tests := map[string]request{
		"beta, in its own project": {method: http.MethodPost, path: "/m2/v1/projects/beta/disks", caller: "project:beta",
			body: map[string]string{"name": "stolen", "snapshot": "s1"}, want: 404, wantErr: `snapshot "s1" of project beta: not found`},
		"admin, for beta": {method: http.MethodPost, path: "/m2/v1/projects/beta/disks", caller: "admin",
			body: map[string]string{"name": "stolen", "snapshot": "s1"}, want: 404, wantErr: `snapshot "s1" of project beta: not found`},
		"beta, in acme": {method: http.MethodPost, path: "/m2/v1/projects/acme/disks", caller: "project:beta",
			body: map[string]string{"name": "stolen", "snapshot": "s1"}, want: 404, wantErr: `project "acme": not found`},
		"beta, listing acme's": {method: http.MethodGet, path: "/m2/v1/projects/acme/snapshots", caller: "project:beta",
			want: 404, wantErr: `project "acme": not found`},
		"beta, removing it": {method: http.MethodDelete, path: "/m2/v1/projects/acme/snapshots/s1", caller: "project:beta",
			want: 404, wantErr: `project "acme": not found`},
		"source given as image": {method: http.MethodPost, path: "/m2/v1/projects/acme/disks", caller: "project:acme",
			body: map[string]string{"name": "x", "image": "s1"}, want: 404, wantErr: `image "s1": not found`},
	}
	e.runTable(t, tests)
	if got := e.snapshotNames("acme"); len(got) != 1 || got[0] != "s1" {
		t.Fatalf("acme's snapshots: %q", got)
	}

	// The snapshot does not depend on its disk, nor the disk made from it
	// on the snapshot.
	e.must(http.StatusNoContent, http.MethodPost, "/m2/v1/projects/acme/disks/web/detach", "project:acme", nil, nil)
	e.must(http.StatusNoContent, http.MethodDelete, "/m2/v1/projects/acme/disks/web", "project:acme", nil, nil)
	again := e.createDiskFromSnapshot("acme", "again", "s1")
	e.must(http.StatusNoContent, http.MethodDelete, "/m2/v1/projects/acme/snapshots/s1", "project:acme", nil, nil)
	_, aboot := e.attach("acme", "again", "n1")
	if got := readLUN(t, e.login(again.Target.IQN, aboot)); got != written {
		t.Fatalf("disk from a snapshot of a deleted disk: sha256 %s, want %s", got, written)
	}
	if got := readLUN(t, e.login(restored.Target.IQN, rboot)); got != written {
		t.Fatalf("disk after its snapshot was removed: sha256 %s, want %s", got, written)
	}
	if got := e.snapshotNames("acme"); len(got) != 0 {
		t.Fatalf("acme's snapshots after removal: %q", got)
	}
}

// createDiskFromSnapshot creates a disk from one of project's snapshots.
func (e *env) createDiskFromSnapshot(project, name, snapshot string) m2.Disk {
	e.t.Helper()
	var d m2.Disk
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/projects/"+project+"/disks", "project:"+project,
		map[string]string{"name": name, "snapshot": snapshot}, &d)
	return d
}

// writeLUN writes length bytes of pattern at offset through qemu's iSCSI
// initiator (qemu-io), as a node would.
func writeLUN(tb testing.TB, l iscsitest.Login, pattern byte, offset, length int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secret := filepath.Join(tb.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(l.Secret), 0o600); err != nil {
		tb.Fatal(err)
	}
	opts := strings.Join([]string{
		"driver=raw", "file.driver=iscsi", "file.transport=tcp",
		"file.portal=" + l.Portal.String(), "file.target=" + l.Target, "file.lun=1",
		"file.initiator-name=" + l.Initiator, "file.user=" + l.User, "file.password-secret=sec0",
	}, ",")
	cmd := exec.CommandContext(ctx, "qemu-io", "--object", "secret,id=sec0,file="+secret, "--image-opts", opts,
		"-c", "write -P "+strconv.Itoa(int(pattern))+" "+strconv.FormatInt(offset, 10)+" "+strconv.FormatInt(length, 10))
	cmd.Env = []string{"LC_ALL=C"}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "wrote ") {
		tb.Fatalf("qemu-io write: %v: %s", err, out)
	}
}
