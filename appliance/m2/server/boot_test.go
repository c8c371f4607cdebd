package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/templates/boottest"
)

// guestHost is the host's loopback as a qemu user-network guest reaches it.
const guestHost = "10.0.2.2"

// refusedMarker is what a test node prints when it gets no boot script.
const refusedMarker = "M2-NO-BOOT-SCRIPT"

// TestNodeBootsFromDisk proves the whole path of a node's boot: a disk
// created through the API from a golden image, attached to a node, whose
// iPXE fetches its script from GET /m2/v1/boot/{token}, logs in with the
// script's initiator name and CHAP account, SAN-boots the disk and runs its
// boot sector, while a node with a wrong token gets no script. Then it
// proves that no wrong token gets a script and that a detach kills the
// token and the secret.
func TestNodeBootsFromDisk(t *testing.T) {
	t.Parallel()
	e := newEnv(t, guestHost)
	const marker = "M2-SANBOOT-OK node-1"
	e.importImage("golden", imageSize, marker)
	disk := e.createDisk("acme", "node-1-root", "golden")
	a, boot := e.attach("acme", "node-1-root", "node-1")
	if !strings.HasPrefix(boot.uri, "iscsi:"+guestHost+"::") {
		t.Fatalf("sanboot URI %q does not point at the portal as the node sees it (%s)", boot.uri, guestHost)
	}

	// The node chains its script over HTTP, as a real node's iPXE does: the
	// script qemu's TFTP hands it only knows the URL with the token.
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = guestHost + ":" + u.Port()
	chain := func(token string) string {
		return "#!ipxe\nchain --autofree " + u.String() + "/m2/v1/boot/" + token + " || echo " + refusedMarker + "\n"
	}
	start := time.Now()
	node := boottest.BootISCSI(t, boottest.NodeOptions{Script: chain(a.BootToken)})
	// Beside it, a node that knows the URL but not the token: one
	// character off.
	wrong := []byte(a.BootToken)
	wrong[0] = '0'
	if a.BootToken[0] == '0' {
		wrong[0] = '1'
	}
	intruder := boottest.BootISCSI(t, boottest.NodeOptions{Script: chain(string(wrong))})

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if err := node.WaitSerial(ctx, marker); err != nil {
		t.Fatal(err)
	}
	t.Logf("node booted the disk in %v", time.Since(start).Round(time.Millisecond))
	if err := intruder.WaitSerial(ctx, refusedMarker); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(intruder.Serial(), marker) || strings.Contains(intruder.Serial(), "Registered SAN device") {
		t.Fatalf("a node with a wrong token reached the disk:\n%s", intruder.Serial())
	}
	intruder.Stop()

	// tgtd shows the node's session, under the initiator name the target
	// admits.
	ts, err := e.tgtd.Driver().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var initiators []string
	for _, tgt := range ts {
		if tgt.IQN == disk.Target.IQN {
			for _, s := range tgt.Sessions {
				initiators = append(initiators, s.Initiator)
			}
		}
	}
	if !slices.Contains(initiators, a.Initiator) {
		t.Errorf("sessions of %s: %q, want one of %s", disk.Target.IQN, initiators, a.Initiator)
	}

	t.Run("wrong token", func(t *testing.T) {
		const refused = "no boot script for this token"
		tests := map[string]request{
			"random":            {path: strings.Repeat("0123456789abcdef", 4), want: 404, wantErr: refused},
			"one character off": {path: string(wrong), want: 404, wantErr: refused},
			"upper case":        {path: strings.ToUpper(a.BootToken), want: 404, wantErr: refused},
			"prefix":            {path: a.BootToken[:32], want: 404, wantErr: refused},
			"token and more":    {path: a.BootToken + "0", want: 404, wantErr: refused},
			"all f":             {path: strings.Repeat("f", 64), want: 404, wantErr: refused},
			"empty":             {path: "", want: 404, wantErr: "no such route"},
			"traversal":         {path: "..%2f..%2fimages", want: 301, location: "/m2/images"},
			"with credentials":  {path: strings.Repeat("0", 64), caller: "admin", want: 404, wantErr: refused},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				tc.method, tc.path = http.MethodGet, "/m2/v1/boot/"+tc.path
				e.with(t).check(t, tc)
			})
		}
	})

	t.Run("detach kills the token and the secret", func(t *testing.T) {
		e := e.with(t)
		node.Stop()
		e.must(http.StatusNoContent, http.MethodPost, "/m2/v1/projects/acme/disks/node-1-root/detach", "project:acme", nil, nil)
		if status, body := e.do(http.MethodGet, "/m2/v1/boot/"+a.BootToken, "", nil); status != http.StatusNotFound {
			t.Fatalf("old token after detach: status %d %s, want 404", status, body)
		}
		old := e.login(disk.Target.IQN, boot)
		if _, err := iscsitest.Inquiry(ctx, old); !errors.Is(err, iscsitest.ErrRefused) {
			t.Fatalf("old credentials after detach: %v, want %v", err, iscsitest.ErrRefused)
		}
		// Attached again to the same node, the target admits the node's
		// initiator once more, but only with the new secret.
		a2, boot2 := e.attach("acme", "node-1-root", "node-1")
		if a2.BootToken == a.BootToken || boot2.secret == boot.secret {
			t.Fatalf("re-attach kept the token or the CHAP secret")
		}
		if _, err := iscsitest.Inquiry(ctx, old); !errors.Is(err, iscsitest.ErrAuth) {
			t.Fatalf("old secret after re-attach: %v, want %v", err, iscsitest.ErrAuth)
		}
		if _, err := iscsitest.Inquiry(ctx, e.login(disk.Target.IQN, boot2)); err != nil {
			t.Fatalf("new secret after re-attach: %v", err)
		}
		if status, _ := e.do(http.MethodGet, "/m2/v1/boot/"+a.BootToken, "", nil); status != http.StatusNotFound {
			t.Fatalf("old token after re-attach: status %d, want 404", status)
		}
	})
}

// TestBootAllowed proves that the boot route asks HandlerConfig.BootAllowed
// about the disk's project and node before it serves a script, and that a
// refusal looks exactly like an unknown token.
func TestBootAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-BOOT-ALLOWED")
	e.createDisk("acme", "web", "golden")
	a, want := e.attach("acme", "web", "n1")

	var mu sync.Mutex
	var holder string // the project that holds node n1
	var asked []string
	srv := httptest.NewServer(server.Handler(server.HandlerConfig{Backend: e.backend, Authorize: authorize, Logger: logger(t),
		BootAllowed: func(_ context.Context, project, node string) error {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, project+"/"+node)
			if node != "n1" || project != holder {
				return fmt.Errorf("node %s is not held by %s", node, project)
			}
			return nil
		}}))
	defer srv.Close()
	tests := map[string]struct {
		holder  string
		want    int
		wantErr string
	}{
		"held by the disk's project": {holder: "acme", want: 200},
		"handed to another project":  {holder: "beta", want: 404, wantErr: "no boot script for this token"},
		"released":                   {holder: "", want: 404, wantErr: "no boot script for this token"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mu.Lock()
			holder, asked = tc.holder, nil
			mu.Unlock()
			e := e.with(t)
			e.srv = srv
			status, body := e.do(http.MethodGet, "/m2/v1/boot/"+a.BootToken, "", nil)
			if status != tc.want || !strings.Contains(string(body), tc.wantErr) {
				t.Fatalf("status %d %s, want %d with %q", status, body, tc.want, tc.wantErr)
			}
			if status == 200 && parseBootScript(t, string(body)) != want {
				t.Fatalf("script %s, want the attachment's", body)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(asked, []string{"acme/n1"}) {
				t.Fatalf("BootAllowed was asked about %q, want acme/n1 once", asked)
			}
		})
	}
}
