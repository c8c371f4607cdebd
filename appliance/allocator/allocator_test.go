package allocator_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator"
	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/allocator/hil"
	"github.com/malleable-cloud/malleable/appliance/allocator/hil/hiltest"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

func logTo(b *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestOpen: the type picks the implementation; a bad HIL configuration is
// refused; a HIL that does not answer is a warning, not a failure.
func TestOpen(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	down := "http://" + closedAddr(t)
	tests := map[string]struct {
		cfg     allocator.Config
		want    string // the implementation's type
		wantErr string
		wantLog string
	}{
		"empty is embedded":   {cfg: allocator.Config{}, want: "*embedded.Allocator", wantLog: "allocator: embedded (IPMI)"},
		"embedded":            {cfg: allocator.Config{Type: "embedded"}, want: "*embedded.Allocator"},
		"hil, bad endpoint":   {cfg: allocator.Config{Type: "hil", HIL: hil.ClientConfig{Endpoint: "ftp://hil"}}, wantErr: "hil allocator: hil client: bad argument"},
		"hil, /v0 in the URL": {cfg: allocator.Config{Type: "hil", HIL: hil.ClientConfig{Endpoint: down + "/v0"}}, wantErr: "must not include /v0"},
		"hil, not answering": {cfg: allocator.Config{Type: "hil", HIL: hil.ClientConfig{Endpoint: down}}, want: "*hil.Client",
			wantLog: "HIL did not answer the start-up check"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			a, err := allocator.Open(ctx, tc.cfg, st, secrets.NewMemory(), logTo(&logs))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Open: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got string
			switch a.(type) {
			case *embedded.Allocator:
				got = "*embedded.Allocator"
			case *hil.Client:
				got = "*hil.Client"
			}
			if got != tc.want {
				t.Errorf("Open gave %T, want %s", a, tc.want)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs.String())
			}
		})
	}
}

// TestOpenEmbedded: the embedded allocator opened over the store keeps
// membership there, answers ErrNotFound for a node the store lacks, and
// ErrNoPowerControl for a node without a BMC.
func TestOpenEmbedded(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateNode(ctx, inventory.Node{Name: "bare", MACs: []string{"52:54:00:00:00:01"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	a, err := allocator.Open(ctx, allocator.Config{}, st, secrets.NewMemory(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PowerStatus(ctx, "bare"); !errors.Is(err, node.ErrNoPowerControl) {
		t.Errorf("power status of a node without a BMC: %v, want ErrNoPowerControl", err)
	}
	if err := a.Power(ctx, "bare", node.PowerAction("hibernate")); !errors.Is(err, node.ErrBadArgument) {
		t.Errorf("an unknown power action: %v, want ErrBadArgument", err)
	}
	if _, err := a.NodeProject(ctx, "ghost"); !errors.Is(err, node.ErrNotFound) {
		t.Errorf("project of an unknown node: %v, want ErrNotFound", err)
	}
	if err := a.Connect(ctx, "bare", "p-a"); err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(ctx, "bare", "p-b"); !errors.Is(err, node.ErrOwned) {
		t.Errorf("connect to a second project: %v, want ErrOwned", err)
	}
	if p, err := a.NodeProject(ctx, "bare"); p != "p-a" || err != nil {
		t.Errorf("project = %q, %v; want p-a", p, err)
	}
}

// TestOpenChecksHILAdmin: against the real HIL, an administrator's account
// opens and a project member's is refused at start.
func TestOpenChecksHILAdmin(t *testing.T) {
	k := hiltest.Start(t)
	ctx := context.Background()
	var logs bytes.Buffer
	admin := allocator.Config{Type: "hil", HIL: hil.ClientConfig{Endpoint: k.URL, Username: k.AdminUser, Password: k.AdminPass}}
	if _, err := allocator.Open(ctx, admin, nil, nil, logTo(&logs)); err != nil {
		t.Fatalf("HIL's admin: %v", err)
	}
	if !strings.Contains(logs.String(), "HIL account is an administrator") {
		t.Errorf("log lacks the admin check:\n%s", logs.String())
	}
	k.AddProject("members")
	k.AddUser("alice", "alice-secret", false, "members")
	member := allocator.Config{Type: "hil", HIL: hil.ClientConfig{Endpoint: k.URL, Username: "alice", Password: "alice-secret"}}
	_, err := allocator.Open(ctx, member, nil, nil, logTo(&logs))
	if !errors.Is(err, hil.ErrUnauthorized) || !strings.Contains(err.Error(), "needs a HIL administrator") {
		t.Errorf("a project member's account: %v", err)
	}
}
