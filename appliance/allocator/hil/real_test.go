package hil

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/hil/hiltest"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// countingTransport counts the requests a Client sends to HIL.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func realClient(t *testing.T, k *hiltest.Kit, cfg ClientConfig) *Client {
	t.Helper()
	cfg.Endpoint = k.URL
	if cfg.Username == "" {
		cfg.Username, cfg.Password = k.AdminUser, k.AdminPass
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantIs(t *testing.T, what string, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("%s: error %v does not match %v", what, err, target)
		}
	}
}

func wantContains(t *testing.T, what string, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want one containing %q", what, subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("%s: error %q does not contain %q", what, err, s)
		}
	}
}

// TestRealHILChecks: the start-up check (admin account), the node-add
// check, and HIL's own 500 message passed through, against real HIL.
func TestRealHILChecks(t *testing.T) {
	t.Parallel() // each test has its own kit, on its own ports
	k := hiltest.Start(t)
	ctx := context.Background()
	admin := realClient(t, k, ClientConfig{})
	if err := admin.CheckAdmin(ctx); err != nil {
		t.Fatalf("admin account: %v", err)
	}
	k.AddProject("proj-1")
	k.AddUser("alice", "alice-secret", false, "proj-1")
	member := realClient(t, k, ClientConfig{Username: "alice", Password: "alice-secret"})
	err := member.CheckAdmin(ctx)
	wantIs(t, "member account", err, ErrUnauthorized)
	wantContains(t, "member account", err, `HIL account "alice"`, "administrator", "administrator-only")
	wrong := realClient(t, k, ClientConfig{Username: k.AdminUser, Password: "wrong"})
	wantIs(t, "wrong password", wrong.CheckAdmin(ctx), ErrUnauthorized)

	// node add: HIL must have the node, free, with a working OBM.
	err = admin.CheckNode(ctx, "node-x")
	wantIs(t, "unknown node", err, node.ErrNotFound)
	wantContains(t, "unknown node", err, `HIL has no node named "node-x"`)

	k.AddNode("node-1")
	if err := admin.CheckNode(ctx, "node-1"); err != nil {
		t.Fatalf("a good node: %v", err)
	}
	// ... and its OBM is disabled again, as HIL keeps a free node's.
	if _, err := k.Call(http.MethodGet, "/node/node-1/power_status", nil); err == nil || !strings.Contains(err.Error(), "OBM is not enabled") {
		t.Fatalf("after the check the OBM must be disabled again: %v", err)
	}

	k.AddNode("node-2")
	k.MoveNode("node-2", "proj-1")
	err = admin.CheckNode(ctx, "node-2")
	wantIs(t, "node in a project", err, node.ErrOwned)
	wantContains(t, "node in a project", err, `is in project "proj-1"`, "free in HIL before its first lease")

	// In HIL but not in OBMd: HIL's 500 page says why, and so do we.
	k.Must(http.MethodPut, "/node/node-3", map[string]any{"obmd": map[string]string{
		"uri": k.OBMDURL + "/node/node-3", "admin_token": k.OBMDToken}})
	err = admin.CheckNode(ctx, "node-3")
	wantIs(t, "node missing in OBMd", err, node.ErrBackend)
	wantContains(t, "node missing in OBMd", err, "cannot enable its OBM", "500", "Failed to get a token for node")
	err = admin.Connect(ctx, "node-3", "proj-1")
	wantContains(t, "connect of a node missing in OBMd", err, "Failed to get a token for node")
}

// TestRealHILProjects: NodeProjects lists every node (free ones as "")
// with few calls, and VerifyProject tells the broker whether HIL shows a
// node in a project.
func TestRealHILProjects(t *testing.T) {
	t.Parallel() // each test has its own kit, on its own ports
	k := hiltest.Start(t)
	ctx := context.Background()
	tr := &countingTransport{}
	c := realClient(t, k, ClientConfig{HTTPClient: &http.Client{Transport: tr}})
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		k.AddNode(n)
	}
	for _, p := range []string{"p-a", "p-b", "p-c", "p-d", "p-e"} {
		k.AddProject(p)
	}
	k.MoveNode("n2", "p-a")
	k.MoveNode("n3", "p-b")
	want := map[string]string{"n1": "", "n2": "p-a", "n3": "p-b", "n4": ""}
	check := func(maxCalls int64) {
		t.Helper()
		tr.n.Store(0)
		got, err := c.NodeProjects(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("NodeProjects = %v, want %v", got, want)
		}
		for n, p := range want {
			if q, ok := got[n]; !ok || q != p {
				t.Fatalf("NodeProjects = %v, want %v", got, want)
			}
		}
		if n := tr.n.Load(); n > maxCalls {
			t.Fatalf("NodeProjects made %d HIL calls, want at most %d", n, maxCalls)
		}
	}
	check(5) // 2 held nodes < 5 projects: nodes/all, nodes/free, projects, 2 show_node
	for _, n := range []string{"n1", "n4"} {
		k.MoveNode(n, "p-c")
		want[n] = "p-c"
	}
	check(7) // 4 held nodes < 5 projects: 3 listings and 4 show_node
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		k.MoveNode(n, "")
		want[n] = ""
	}
	check(2) // all free: no project listing at all
	for _, p := range []string{"p-a", "p-b", "p-c", "p-d", "p-e"} {
		k.Must(http.MethodDelete, "/project/"+p, nil)
	}
	k.MoveNode("n1", "p-f")
	k.MoveNode("n2", "p-f")
	want["n1"], want["n2"] = "p-f", "p-f"
	check(4) // 2 held nodes, 1 project: 3 listings and that project's nodes

	k.MoveNode("n2", "p-a")
	if err := c.VerifyProject(ctx, "n2", "p-a"); err != nil {
		t.Fatalf("n2 in p-a: %v", err)
	}
	err := c.VerifyProject(ctx, "n2", "p-b")
	wantIs(t, "n2 in p-b", err, node.ErrOwned)
	wantContains(t, "n2 in p-b", err, "HIL shows it in project p-a")
	wantIs(t, "free n1", c.VerifyProject(ctx, "n1", "p-a"), node.ErrOwned)
	wantIs(t, "unknown node", c.VerifyProject(ctx, "n9", "p-a"), node.ErrOwned, node.ErrNotFound)
}

// TestRealHILHandOver: free → A → B through real HIL and OBMd, with a
// network attached in A (so Detach runs detach_network and waits for HIL's
// network daemon); then the daemon stops and a detach waits instead of
// failing; then HIL goes down, and comes back without its state.
func TestRealHILHandOver(t *testing.T) {
	t.Parallel() // each test has its own kit, on its own ports
	k := hiltest.Start(t)
	ctx := context.Background()
	c := realClient(t, k, ClientConfig{})
	c.actionWait = 3 * time.Second
	k.AddNode("node-1")
	k.AddNode("node-2")
	k.AddNode("node-3")

	if err := c.Connect(ctx, "node-1", "tenant-a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Power(ctx, "node-1", node.PowerOn); err != nil {
		t.Fatal(err)
	}
	if on, err := c.PowerStatus(ctx, "node-1"); err != nil || !on {
		t.Fatalf("power status after on: %v %v", on, err)
	}
	k.AttachNetwork("node-1", "tenant-a", "net-a")
	if err := c.Power(ctx, "node-1", node.PowerOff); err != nil {
		t.Fatal(err)
	}
	if err := c.Detach(ctx, "node-1", "tenant-a"); err != nil {
		t.Fatal(err)
	}
	if nets := k.Networks("node-1"); len(nets) != 0 {
		t.Fatalf("networks still attached after detach: %v", nets)
	}
	if err := c.Connect(ctx, "node-1", "tenant-b"); err != nil {
		t.Fatal(err)
	}
	if p := k.NodeProject("node-1"); p != "tenant-b" {
		t.Fatalf("node-1 in %q, want tenant-b", p)
	}

	// A pending network action. HIL's network daemon stops before node-2's
	// network is attached, so the attach stays PENDING: detaching the node
	// waits (node.ErrPending, with the likely reason), and so does re-sending a
	// detach_network, which HIL answers with 409.
	if err := c.Connect(ctx, "node-2", "tenant-a"); err != nil {
		t.Fatal(err)
	}
	k.StopNetworks()
	k.QueueAttachNetwork("node-2", "tenant-a", "net-a2")
	err := c.Detach(ctx, "node-2", "tenant-a")
	wantIs(t, "detach with an action PENDING", err, node.ErrPending)
	wantContains(t, "detach with an action PENDING", err, "409", "Node has pending network actions", "serve-networks")
	err = c.detachNetwork(ctx, "node-2", "eth0", "net-a2")
	wantIs(t, "detach_network with an action PENDING", err, node.ErrPending)
	wantContains(t, "detach_network with an action PENDING", err, "409", "A networking operation is already active on the nic.", "serve-networks")
	if errors.Is(err, node.ErrBlocked) || errors.Is(err, node.ErrBackend) {
		t.Fatalf("a pending action is neither blocked nor a backend failure: %v", err)
	}
	k.StartNetworks()
	deadline := time.Now().Add(30 * time.Second)
	for err = c.Detach(ctx, "node-2", "tenant-a"); errors.Is(err, node.ErrPending) && time.Now().Before(deadline); err = c.Detach(ctx, "node-2", "tenant-a") {
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("detach after the network daemon is back: %v", err)
	}
	if nets := k.Networks("node-2"); len(nets) != 0 || k.NodeProject("node-2") != "" {
		t.Fatalf("node-2 after detach: project %q, networks %v", k.NodeProject("node-2"), nets)
	}

	// A detach_network HIL's daemon does not apply: Detach gives up
	// waiting with node.ErrPending, and the re-sent detach gets 409. (Last: HIL's
	// mock switch cannot detach this network after a daemon restart.)
	if err := c.Connect(ctx, "node-3", "tenant-a"); err != nil {
		t.Fatal(err)
	}
	k.AttachNetwork("node-3", "tenant-a", "net-a3")
	k.StopNetworks()
	err = c.Detach(ctx, "node-3", "tenant-a")
	wantIs(t, "detach_network left PENDING", err, node.ErrPending)
	wantContains(t, "detach_network left PENDING", err, "still PENDING after 3s", "serve-networks")
	err = c.Detach(ctx, "node-3", "tenant-a")
	wantIs(t, "re-sent detach_network", err, node.ErrPending)
	wantContains(t, "re-sent detach_network", err, "A networking operation is already active on the nic.")

	// HIL down: unavailable, a reason to wait, not a node failure.
	k.Down()
	err = c.Connect(ctx, "node-2", "tenant-b")
	wantIs(t, "HIL down", err, node.ErrUnavailable, node.ErrBackend)
	wantContains(t, "HIL down", err, "connection refused")
	_, err = c.NodeProjects(ctx)
	wantIs(t, "HIL down", err, node.ErrUnavailable)

	// Up again on an empty database: HIL knows no node.
	k.Up()
	got, err := c.NodeProjects(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("after HIL lost its state: %v %v", got, err)
	}
	wantIs(t, "verify after lost state", c.VerifyProject(ctx, "node-1", "tenant-b"), node.ErrOwned, node.ErrNotFound)
}

// TestRealHILDeadBMC: OBMd runs one operation at a time and waits about
// 20 s for a BMC that does not answer; meanwhile another node's OBM enable
// (a connect) must wait, not time out.
func TestRealHILDeadBMC(t *testing.T) {
	t.Parallel() // each test has its own kit, on its own ports
	k := hiltest.Start(t)
	ctx := context.Background()
	c := realClient(t, k, ClientConfig{})
	k.AddNode("node-ok")
	k.AddNodeIPMI("node-dead", "127.0.0.1:9", "admin", "x") // the discard port: no BMC
	if err := c.Connect(ctx, "node-dead", "tenant-a"); err != nil {
		t.Fatal(err)
	}
	dead := make(chan error, 1)
	go func() { _, err := c.PowerStatus(ctx, "node-dead"); dead <- err }()
	time.Sleep(time.Second) // OBMd is now busy with the dead BMC
	start := time.Now()
	if err := c.Connect(ctx, "node-ok", "tenant-b"); err != nil {
		t.Fatalf("connect behind a dead BMC, after %s: %v", time.Since(start).Round(time.Second), err)
	}
	t.Logf("connect behind a dead BMC took %s", time.Since(start).Round(100*time.Millisecond))
	err := <-dead
	wantIs(t, "the dead BMC", err, node.ErrBackend)
	if errors.Is(err, node.ErrUnavailable) {
		t.Fatalf("the dead BMC's own error is OBMd's answer, not a timeout: %v", err)
	}
}

// TestRealHILPasswordFile: the client reads its password file again when
// it changes, without a restart.
func TestRealHILPasswordFile(t *testing.T) {
	t.Parallel() // each test has its own kit, on its own ports
	k := hiltest.Start(t)
	ctx := context.Background()
	pw := filepath.Join(t.TempDir(), "hil.password")
	if err := os.WriteFile(pw, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(ClientConfig{Endpoint: k.URL, Username: k.AdminUser, PasswordFile: pw})
	if err != nil {
		t.Fatal(err)
	}
	wantIs(t, "old password", c.CheckAdmin(ctx), ErrUnauthorized)
	if err := os.WriteFile(pw, []byte(k.AdminPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A new size is enough; some filesystems keep a coarse mtime.
	if err := c.CheckAdmin(ctx); err != nil {
		t.Fatalf("after the password file changed: %v", err)
	}
	if err := os.Remove(pw); err != nil {
		t.Fatal(err)
	}
	wantContains(t, "password file gone", c.CheckAdmin(ctx), "HIL password file")
}
