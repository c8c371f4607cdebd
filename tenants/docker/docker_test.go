package docker

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
)

func TestNewRefusesBadOwner(t *testing.T) {
	for name, owner := range map[string]string{"dash": "a-b", "upper": "Abc", "digit first": "1ab", "dot": "a.b"} {
		t.Run(name, func(t *testing.T) {
			_, err := New(context.Background(), Options{Owner: owner})
			mustErrIs(t, err, ErrInvalid)
		})
	}
}

func TestSpecValidation(t *testing.T) {
	ok := ContainerSpec{Tenant: "acme", Role: "probe", Name: "acme-probe", Image: "x", Networks: []Attachment{{NetworkID: "n"}}}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	for name, mut := range map[string]func(*ContainerSpec){
		"bad tenant":       func(s *ContainerSpec) { s.Tenant = "Acme;rm" },
		"bad name":         func(s *ContainerSpec) { s.Name = "../x" },
		"bad role":         func(s *ContainerSpec) { s.Role = "" },
		"no image":         func(s *ContainerSpec) { s.Image = "" },
		"no network":       func(s *ContainerSpec) { s.Networks = nil },
		"relative file":    func(s *ContainerSpec) { s.Files = []File{{Path: "etc/x"}} },
		"file at root":     func(s *ContainerSpec) { s.Files = []File{{Path: "/x"}} },
		"unclean file":     func(s *ContainerSpec) { s.Files = []File{{Path: "/etc/../x/y"}} },
		"restart":          func(s *ContainerSpec) { s.Restart = "sometimes" },
		"port":             func(s *ContainerSpec) { s.PublishLocal = []int{70000} },
		"shared publishes": func(s *ContainerSpec) { s.Tenant = ""; s.PublishLocal = []int{80} },
		"env":              func(s *ContainerSpec) { s.Env = []string{"NOEQUALS"} },
	} {
		t.Run(name, func(t *testing.T) {
			s := ok
			mut(&s)
			mustErrIs(t, s.validate(), ErrInvalid)
		})
	}
	// A file's content changes the hash; its bytes never appear in it.
	a, b := ok, ok
	a.Files = []File{{Path: "/run/s/k", Content: []byte("one")}}
	b.Files = []File{{Path: "/run/s/k", Content: []byte("two")}}
	if a.hash() == b.hash() {
		t.Error("file content does not change the spec hash")
	}
}

func TestEnsureNetwork(t *testing.T) {
	e := newTestEnv(t)
	ctx := ctxT(t, 2*time.Minute)
	_, err := e.rt.EnsureNetwork(ctx, "Bad_Tenant")
	mustErrIs(t, err, ErrInvalid)

	// Concurrent first calls end with one network, used by everyone.
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := e.rt.EnsureNetwork(ctx, "acme")
			ids[i], errs[i] = n.ID, err
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
	}
	n, err := e.rt.EnsureNetwork(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if id != n.ID {
			t.Errorf("call %d got network %s, later call %s", i, id, n.ID)
		}
	}
	if _, nets := e.count(t, "acme"); nets != 1 {
		t.Errorf("%d networks labelled for acme, want 1", nets)
	}
	if n.Subnet == "" || n.Gateway == "" || n.Name != e.rt.owner+"-acme" {
		t.Errorf("network %+v: want name, subnet and gateway", n)
	}
	raw, err := e.raw.NetworkInspect(ctx, n.ID, networkInspectOpts)
	if err != nil || !raw.Internal {
		t.Errorf("network internal = %v (err %v), want true", raw.Internal, err)
	}

	// A foreign network holding our name is refused, not adopted.
	if _, err := e.raw.NetworkCreate(ctx, e.rt.owner+"-other", networkCreateOpts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.raw.NetworkRemove(context.Background(), e.rt.owner+"-other") })
	_, err = e.rt.EnsureNetwork(ctx, "other")
	mustErrIs(t, err, ErrForeign)

	if err := e.rt.RemoveNetwork(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.RemoveNetwork(ctx, n.ID); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

func TestEnsureLifecycle(t *testing.T) {
	e := newTestEnv(t)
	img := e.probeImage(t)
	ctx := ctxT(t, 3*time.Minute)
	n, err := e.rt.EnsureNetwork(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	spec := serveSpec("acme", e.rt.owner+"-acme-probe", img, Attachment{NetworkID: n.ID, Aliases: []string{"probe"}})
	spec.PublishLocal = []int{8080}

	c1, act, err := e.rt.Ensure(ctx, spec)
	if err != nil || act != Created {
		t.Fatalf("first Ensure: %v, %v; want created", act, err)
	}
	if c1, err = e.rt.WaitHealthy(ctx, c1.ID); err != nil {
		t.Fatal(err)
	}
	// Published on 127.0.0.1 at a random port that answers.
	hp := c1.Ports[8080]
	if hp == 0 {
		t.Fatalf("no host port read back: %+v", c1.Ports)
	}
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hp), 5*time.Second)
	if err != nil {
		t.Fatalf("published port: %v", err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.Contains(line, "hello from probe") {
		t.Errorf("published port answered %q", line)
	}
	if c1.IPs[n.ID] == "" {
		t.Errorf("no IP on the tenant network: %+v", c1.IPs)
	}

	// Same spec: adopted without a restart.
	c2, act, err := e.rt.Ensure(ctx, spec)
	if err != nil || act != Unchanged || c2.ID != c1.ID || !c2.StartedAt.Equal(c1.StartedAt) {
		t.Fatalf("second Ensure: %v %v, id %s->%s, started %v->%v; want unchanged, same container, same start",
			act, err, short(c1.ID), short(c2.ID), c1.StartedAt, c2.StartedAt)
	}

	// Stopped: started again, same container.
	if err := e.raw.ContainerStop(ctx, c1.ID, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	c3, act, err := e.rt.Ensure(ctx, spec)
	if err != nil || act != Started || c3.ID != c1.ID || c3.State != "running" {
		t.Fatalf("Ensure after stop: %v %v, state %s; want started, same ID", act, err, c3.State)
	}

	// Spec changed: replaced by a new container.
	spec.Env = []string{"GENERATION=2"}
	c4, act, err := e.rt.Ensure(ctx, spec)
	if err != nil || act != Replaced || c4.ID == c1.ID {
		t.Fatalf("Ensure with a new spec: %v %v; want replaced with a new ID", act, err)
	}
	if cs, err := e.rt.List(ctx, "acme"); err != nil || len(cs) != 1 || cs[0].ID != c4.ID {
		t.Fatalf("List after replace: %+v, %v; want only the new container", cs, err)
	}

	// A container name held by something not ours is refused.
	foreign := spec
	foreign.Name = e.rt.owner + "-foreign"
	if _, err := e.raw.ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"sleep"}}, nil, nil, nil, foreign.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.raw.ContainerRemove(context.Background(), foreign.Name, container.RemoveOptions{Force: true})
	})
	_, _, err = e.rt.Ensure(ctx, foreign)
	mustErrIs(t, err, ErrForeign)
	mustErrIs(t, e.rt.Remove(ctx, foreign.Name), ErrForeign)
}

func TestEnsureConcurrent(t *testing.T) {
	e := newTestEnv(t)
	img := e.probeImage(t)
	ctx := ctxT(t, 3*time.Minute)
	n, err := e.rt.EnsureNetwork(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	spec := serveSpec("race", e.rt.owner+"-race-probe", img, Attachment{NetworkID: n.ID})
	spec.Files = []File{{Path: "/run/secrets/token", Content: []byte("s3cret"), UID: 65534, GID: 65534}}
	const callers = 8
	var wg sync.WaitGroup
	ids, acts, errs := make([]string, callers), make([]Action, callers), make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, act, err := e.rt.Ensure(ctx, spec)
			ids[i], acts[i], errs[i] = c.ID, act, err
		}()
	}
	wg.Wait()
	created := 0
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("caller %d got %s, caller 0 %s", i, short(ids[i]), short(ids[0]))
		}
		if acts[i] == Created {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d callers created, want 1 (actions %v)", created, acts)
	}
	if cs, _ := e.count(t, "race"); cs != 1 {
		t.Errorf("%d containers, want 1", cs)
	}
	c, err := e.rt.WaitHealthy(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if out, _, code, err := e.rt.Exec(ctx, c.ID, []string{"/probe", "cat", "/run/secrets/token"}); err != nil || code != 0 || out != "s3cret" {
		t.Errorf("the winner's file: %q exit %d err %v", out, code, err)
	}
}

func TestIsolationAndSecrets(t *testing.T) {
	e := newTestEnv(t)
	img := e.probeImage(t)
	ctx := ctxT(t, 3*time.Minute)
	na, err := e.rt.EnsureNetwork(ctx, "ta")
	if err != nil {
		t.Fatal(err)
	}
	nb, err := e.rt.EnsureNetwork(ctx, "tb")
	if err != nil {
		t.Fatal(err)
	}
	secret := "tenant-a-secret-" + e.rt.owner
	a1spec := serveSpec("ta", e.rt.owner+"-a1", img, Attachment{NetworkID: na.ID, Aliases: []string{"peer"}})
	a1spec.Files = []File{{Path: "/run/secrets/token", Content: []byte(secret), UID: 65534, GID: 65534}}
	a1spec.PublishLocal = []int{8080} // also on the publish network: must not open a path to tb
	a2spec := serveSpec("ta", e.rt.owner+"-a2", img, Attachment{NetworkID: na.ID})
	b1spec := serveSpec("tb", e.rt.owner+"-b1", img, Attachment{NetworkID: nb.ID})
	b1spec.PublishLocal = []int{8080}
	var a1, a2, b1 Container
	for _, x := range []struct {
		s ContainerSpec
		c *Container
	}{{a1spec, &a1}, {a2spec, &a2}, {b1spec, &b1}} {
		c, _, err := e.rt.Ensure(ctx, x.s)
		if err != nil {
			t.Fatal(err)
		}
		if *x.c, err = e.rt.WaitHealthy(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	// Same tenant: by IP and by alias.
	for _, addr := range []string{a1.IPs[na.ID] + ":8080", "peer:8080"} {
		if out, code := e.dial(t, a2, addr); code != 0 || !strings.Contains(out, "hello") {
			t.Errorf("a2 -> a1 at %s: exit %d %q; want reachable", addr, code, out)
		}
	}
	// Other tenant, its publish-network address, the outside world: unreachable.
	var b1Any []string
	for _, ip := range b1.IPs {
		b1Any = append(b1Any, ip+":8080")
	}
	for _, addr := range append(b1Any, "1.1.1.1:53") {
		if out, code := e.dial(t, a2, addr); code == 0 {
			t.Errorf("a2 (tenant ta) reached %s: %q; want isolated", addr, out)
		}
		if out, code := e.dial(t, a1, addr); code == 0 {
			t.Errorf("a1 (tenant ta, published) reached %s: %q; want isolated", addr, out)
		}
	}

	// The secret is a 0400 file of the container's user, readable by it only.
	if out, _, code, err := e.rt.Exec(ctx, a1.ID, []string{"/probe", "cat", "/run/secrets/token"}); err != nil || code != 0 || out != secret {
		t.Errorf("container user reads its secret: %q exit %d err %v", out, code, err)
	}
	if out, errOut, code, err := e.rt.ExecAs(ctx, a1.ID, "1000:1000", []string{"/probe", "cat", "/run/secrets/token"}); err != nil || code == 0 {
		t.Errorf("another user read the secret: %q %q exit %d err %v", out, errOut, code, err)
	}
	raw, err := e.raw.ContainerInspect(ctx, a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dump := fmt.Sprintf("%+v %+v", raw.Config, raw.HostConfig); strings.Contains(dump, secret) {
		t.Error("the secret appears in the container's config (env, labels or command)")
	}
	if !raw.HostConfig.ReadonlyRootfs || len(raw.HostConfig.CapDrop) == 0 || raw.HostConfig.PidsLimit == nil {
		t.Errorf("hardening lost: %+v", raw.HostConfig)
	}

	// RemoveTenant leaves nothing labelled for ta, touches tb not, and is idempotent.
	for range 2 {
		if err := e.rt.RemoveTenant(ctx, "ta"); err != nil {
			t.Fatal(err)
		}
	}
	if cs, ns := e.count(t, "ta"); cs != 0 || ns != 0 {
		t.Errorf("after RemoveTenant: %d containers, %d networks labelled for ta", cs, ns)
	}
	if cs, ns := e.count(t, "tb"); cs != 1 || ns != 2 {
		t.Errorf("tb: %d containers, %d networks; want 1 and 2 (internal + publish)", cs, ns)
	}
}

func TestSharedContainerJoinsTenants(t *testing.T) {
	e := newTestEnv(t)
	img := e.probeImage(t)
	ctx := ctxT(t, 3*time.Minute)
	shared, err := e.rt.EnsureSharedNetwork(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	na, err := e.rt.EnsureNetwork(ctx, "ta")
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := e.rt.Ensure(ctx, serveSpec("", e.rt.owner+"-db", img, Attachment{NetworkID: shared.ID}))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := e.rt.Connect(ctx, db.ID, na.ID, "database"); err != nil {
			t.Fatal(err)
		}
	}
	client, _, err := e.rt.Ensure(ctx, serveSpec("ta", e.rt.owner+"-a", img, Attachment{NetworkID: na.ID}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.WaitHealthy(ctx, db.ID); err != nil {
		t.Fatal(err)
	}
	if out, code := e.dial(t, client, "database:8080"); code != 0 {
		t.Errorf("tenant -> shared by alias: %d %q", code, out)
	}
	// The shared container stays when the tenant goes.
	if err := e.rt.RemoveTenant(ctx, "ta"); err != nil {
		t.Fatal(err)
	}
	all, err := e.rt.List(ctx, "")
	if err != nil || len(all) != 1 || all[0].ID != db.ID || all[0].Tenant != "" {
		t.Errorf("after RemoveTenant: %+v %v; want only the shared container", all, err)
	}
}
