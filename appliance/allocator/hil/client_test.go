package hil

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// allocator is the method set the appliance needs; Client and Embedded
// must both keep it.
type allocator interface {
	Connect(ctx context.Context, node, project string) error
	Detach(ctx context.Context, node, project string) error
	NodeProject(ctx context.Context, node string) (string, error)
	PowerStatus(ctx context.Context, node string) (bool, error)
	Power(ctx context.Context, node string, a node.PowerAction) error
	SetBootDevice(ctx context.Context, node string, d node.BootDevice, persistent bool) error
}

var (
	_ allocator = (*Client)(nil)
)

const (
	adminUser     = "malleable"
	adminPassword = "s3cret-hil-pw"
)

// newFixture is a HIL with database auth: the appliance's admin account,
// a member of project alice, projects alice and bob, node-01 with two NICs
// and node-02 with one.
func newFixture(t *testing.T) *fakeHIL {
	t.Helper()
	f := newFakeHIL(t)
	f.addUser(adminUser, adminPassword, true)
	f.addUser("alice-user", "alice-pw", false, "alice")
	f.addNode("node-01", 2)
	f.addNode("node-02", 1)
	f.mu.Lock()
	f.projects["alice"], f.projects["bob"] = true, true
	f.mu.Unlock()
	return f
}

func newTestClient(t *testing.T, f *fakeHIL, user, password string) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{
		Endpoint: f.srv.URL, Username: user, Password: password,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.pollMin, c.pollMax = time.Millisecond, 5*time.Millisecond
	return c
}

// checkErr checks err against a sentinel and a substring, and that it
// never leaks the password or an OBMd token.
func checkErr(t *testing.T, f *fakeHIL, err, want error, sub string) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error %v, want %v", err, want)
	case err != nil && !strings.Contains(err.Error(), sub):
		t.Fatalf("error %q does not contain %q", err, sub)
	}
	if err == nil {
		return
	}
	if strings.Contains(err.Error(), adminPassword) || strings.Contains(err.Error(), "token=") {
		t.Fatalf("error leaks a secret: %v", err)
	}
	for _, r := range f.obmd.requests() {
		if r.Token != "" && strings.Contains(err.Error(), r.Token) {
			t.Fatalf("error leaks an OBMd token: %v", err)
		}
	}
}

type row struct {
	setup          func(f *fakeHIL, c *Client)
	user, password string // no user means the admin account
	run            func(ctx context.Context, c *Client) (any, error)
	want           any // compared when non-nil
	wantErr        error
	wantSub        string
	check          func(t *testing.T, f *fakeHIL)
}

func runRows(t *testing.T, rows map[string]row) {
	for name, tc := range rows {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			user, pw := adminUser, adminPassword
			if tc.user != "" {
				user, pw = tc.user, tc.password
			}
			c := newTestClient(t, f, user, pw)
			if tc.setup != nil {
				// Under the fakes' locks, so their handlers see the setup.
				f.configure(func(*fakeHIL) {})
				f.obmd.set(func(*fakeOBMd) {})
				tc.setup(f, c)
				f.configure(func(*fakeHIL) {})
				f.obmd.set(func(*fakeOBMd) {})
			}
			got, err := tc.run(t.Context(), c)
			checkErr(t, f, err, tc.wantErr, tc.wantSub)
			if tc.want != nil && got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, f)
			}
			for _, call := range f.allCalls() {
				if call.Method == http.MethodGet && (call.Body != "" || call.ContentLength > 0) {
					t.Errorf("GET %s carried a body", call.Path)
				}
			}
			for _, r := range f.obmd.requests() {
				if r.Authorization != "" {
					t.Errorf("OBMd received HIL's credentials on %s %s", r.Method, r.Path)
				}
			}
		})
	}
}

func wantCalls(t *testing.T, f *fakeHIL, want ...string) {
	t.Helper()
	if got := f.callLog(); !slices.Equal(got, want) {
		t.Fatalf("HIL calls:\n got %q\nwant %q", got, want)
	}
}

func wantState(t *testing.T, f *fakeHIL, node string, want fakeNodeState) {
	t.Helper()
	got := f.state(node)
	got.Token = "" // compared by the caller when it matters
	if got.Project != want.Project || got.OBMEnabled != want.OBMEnabled || got.Pending != want.Pending || !slices.Equal(got.Networks, want.Networks) {
		t.Fatalf("node %s state %+v, want %+v", node, got, want)
	}
}

func connect(node, project string) func(ctx context.Context, c *Client) (any, error) {
	return func(ctx context.Context, c *Client) (any, error) { return nil, c.Connect(ctx, node, project) }
}

func detach(node, project string) func(ctx context.Context, c *Client) (any, error) {
	return func(ctx context.Context, c *Client) (any, error) { return nil, c.Detach(ctx, node, project) }
}

func power(node string, a node.PowerAction) func(ctx context.Context, c *Client) (any, error) {
	return func(ctx context.Context, c *Client) (any, error) { return nil, c.Power(ctx, node, a) }
}

func powerStatus(node string) func(ctx context.Context, c *Client) (any, error) {
	return func(ctx context.Context, c *Client) (any, error) { return c.PowerStatus(ctx, node) }
}

func nodeProject(node string) func(ctx context.Context, c *Client) (any, error) {
	return func(ctx context.Context, c *Client) (any, error) { return c.NodeProject(ctx, node) }
}

func bootDevice(node string, d node.BootDevice) func(ctx context.Context, c *Client) (any, error) {
	return func(ctx context.Context, c *Client) (any, error) { return nil, c.SetBootDevice(ctx, node, d, true) }
}

// ownedBy puts a node in a project with its OBM enabled.
func ownedBy(node, project string) func(f *fakeHIL, c *Client) {
	return func(f *fakeHIL, _ *Client) {
		f.setProject(node, project)
		f.enableOBM(node)
	}
}

func TestClientAllocation(t *testing.T) {
	runRows(t, map[string]row{
		"connect free node": {
			run: connect("node-01", "alice"),
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true})
				wantCalls(t, f, "PUT /v0/project/alice", "POST /v0/project/alice/connect_node", "PUT /v0/node/node-01/obm")
			},
		},
		"connect creates a missing project": {
			run: connect("node-01", "carol"),
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "carol", OBMEnabled: true})
			},
		},
		"connect node already in the same project is idempotent": {
			setup: ownedBy("node-01", "alice"),
			run:   connect("node-01", "alice"),
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true})
				wantCalls(t, f, "PUT /v0/project/alice", "POST /v0/project/alice/connect_node",
					"GET /v0/node/node-01", "PUT /v0/node/node-01/obm")
			},
		},
		"connect twice in a row": {
			run: func(ctx context.Context, c *Client) (any, error) {
				if err := c.Connect(ctx, "node-01", "alice"); err != nil {
					return nil, err
				}
				return nil, c.Connect(ctx, "node-01", "alice")
			},
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true})
			},
		},
		"connect node owned by another project": {
			setup:   ownedBy("node-01", "bob"),
			run:     connect("node-01", "alice"),
			wantErr: node.ErrOwned,
			wantSub: `HIL shows project "bob"`,
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "bob", OBMEnabled: true})
				if slices.Contains(f.callLog(), "PUT /v0/node/node-01/obm") {
					t.Fatal("touched the OBM of another project's node")
				}
			},
		},
		"connect as a project member, who may not create projects": {
			user: "alice-user", password: "alice-pw",
			run: connect("node-01", "alice"),
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true})
			},
		},
		"connect as a member to a node another project owns": {
			user: "alice-user", password: "alice-pw",
			setup:   ownedBy("node-01", "bob"),
			run:     connect("node-01", "alice"),
			wantErr: node.ErrOwned,
			wantSub: "Node is already owned by a project.",
		},
		"connect unknown node": {
			run:     connect("node-99", "alice"),
			wantErr: node.ErrNotFound,
			wantSub: `404 NotFoundError "Node node-99 does not exist."`,
		},
		"connect when OBMd is unreachable": {
			setup:   func(f *fakeHIL, _ *Client) { f.obmd.set(func(o *fakeOBMd) { o.down = true }) },
			run:     connect("node-01", "alice"),
			wantErr: node.ErrBackend,
			wantSub: "PUT /v0/node/node-01/obm: 500 Internal Server Error",
		},
		"detach node with networks and OBM enabled": {
			setup: func(f *fakeHIL, c *Client) {
				ownedBy("node-01", "alice")(f, c)
				f.attach("node-01", "eth0", "alice-net")
				f.attach("node-01", "eth1", "alice-storage")
			},
			run: detach("node-01", "alice"),
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{})
				calls := f.callLog()
				if len(calls) != 9 {
					t.Fatalf("HIL calls %q", calls)
				}
				wantCalls(t, f, "GET /v0/node/node-01",
					"POST /v0/node/node-01/nic/eth0/detach_network", calls[2], calls[3],
					"POST /v0/node/node-01/nic/eth1/detach_network", calls[5], calls[6],
					"PUT /v0/node/node-01/obm", "POST /v0/project/alice/detach_node")
				for _, i := range []int{2, 3, 5, 6} {
					if !strings.HasPrefix(calls[i], "GET /v0/networking_action/") {
						t.Fatalf("call %d is %q, want a networking-action poll", i, calls[i])
					}
				}
			},
		},
		"detach free node": {
			run:   detach("node-01", "alice"),
			check: func(t *testing.T, f *fakeHIL) { wantCalls(t, f, "GET /v0/node/node-01") },
		},
		"detach twice in a row": {
			setup: ownedBy("node-01", "alice"),
			run: func(ctx context.Context, c *Client) (any, error) {
				if err := c.Detach(ctx, "node-01", "alice"); err != nil {
					return nil, err
				}
				return nil, c.Detach(ctx, "node-01", "alice")
			},
			check: func(t *testing.T, f *fakeHIL) { wantState(t, f, "node-01", fakeNodeState{}) },
		},
		"detach from the wrong project": {
			setup:   ownedBy("node-01", "bob"),
			run:     detach("node-01", "alice"),
			wantErr: node.ErrOwned,
			wantSub: `HIL shows project "bob"`,
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "bob", OBMEnabled: true})
			},
		},
		"detach races another detach": {
			setup: func(f *fakeHIL, c *Client) {
				ownedBy("node-01", "alice")(f, c)
				f.configure(func(f *fakeHIL) {
					f.before = func(r *http.Request) {
						if r.URL.Path == "/v0/project/alice/detach_node" {
							f.setProject("node-01", "")
						}
					}
				})
			},
			run: detach("node-01", "alice"),
		},
		"detach when the networking action fails": {
			setup: func(f *fakeHIL, c *Client) {
				ownedBy("node-01", "alice")(f, c)
				f.attach("node-01", "eth0", "alice-net")
				f.configure(func(f *fakeHIL) { f.failActions = true })
			},
			run:     detach("node-01", "alice"),
			wantErr: node.ErrBackend,
			wantSub: `status "ERROR"`,
			check: func(t *testing.T, f *fakeHIL) {
				wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true, Networks: []string{"eth0:alice-net"}})
			},
		},
		// A PENDING action (HIL's network daemon stopped, a 409 "already
		// active" or "pending network actions"): real_test.go, against
		// real HIL.
		"node project of a free node":  {run: nodeProject("node-01"), want: ""},
		"node project of an owned one": {setup: ownedBy("node-01", "bob"), run: nodeProject("node-01"), want: "bob"},
		"node project of an unknown node": {
			run: nodeProject("node-99"), wantErr: node.ErrNotFound, wantSub: "GET /v0/node/node-99: 404 NotFoundError",
		},
	})
}

func TestClientPower(t *testing.T) {
	lastOBMd := func(t *testing.T, f *fakeHIL) obmdReq {
		t.Helper()
		reqs := f.obmd.requests()
		if len(reqs) == 0 {
			t.Fatal("OBMd received nothing")
		}
		return reqs[len(reqs)-1]
	}
	wantOBMd := func(method, op, body string) func(t *testing.T, f *fakeHIL) {
		return func(t *testing.T, f *fakeHIL) {
			t.Helper()
			r := lastOBMd(t, f)
			if r.Method != method || r.Path != "/node/"+f.obmdID("node-01")+"/"+op {
				t.Fatalf("OBMd got %s %s, want %s .../%s", r.Method, r.Path, method, op)
			}
			if r.Token != f.state("node-01").Token {
				t.Fatalf("OBMd got token %q, HIL holds %q", r.Token, f.state("node-01").Token)
			}
			if body == "" && r.Body != "" || body != "" && !jsonEqual(r.Body, body) {
				t.Fatalf("OBMd got body %q, want %q", r.Body, body)
			}
		}
	}
	noCalls := func(t *testing.T, f *fakeHIL) { wantCalls(t, f) }
	alice := ownedBy("node-01", "alice")
	runRows(t, map[string]row{
		"power on through the 307": {
			setup: alice, run: power("node-01", node.PowerOn),
			check: func(t *testing.T, f *fakeHIL) {
				wantOBMd(http.MethodPost, "power_on", "")(t, f)
				if !f.obmd.node(f.obmdID("node-01")).on {
					t.Fatal("node is not on")
				}
			},
		},
		"power off through the 307": {
			setup: alice, run: power("node-01", node.PowerOff), check: wantOBMd(http.MethodPost, "power_off", ""),
		},
		"power cycle sends force false": {
			setup: alice, run: power("node-01", node.PowerCycle), check: wantOBMd(http.MethodPost, "power_cycle", `{"force": false}`),
		},
		"reset is a forced power cycle": {
			setup: alice, run: power("node-01", node.PowerReset), check: wantOBMd(http.MethodPost, "power_cycle", `{"force": true}`),
		},
		"soft is not supported by HIL": {
			setup: alice, run: power("node-01", node.PowerSoft),
			wantErr: node.ErrBadArgument, wantSub: "not supported by HIL", check: noCalls,
		},
		"unknown power action": {
			setup: alice, run: power("node-01", "hibernate"), wantErr: node.ErrBadArgument, wantSub: "hibernate", check: noCalls,
		},
		"status on": {
			setup: func(f *fakeHIL, c *Client) {
				alice(f, c)
				f.obmd.set(func(o *fakeOBMd) { o.nodes[f.obmdID("node-01")].on = true })
			},
			run: powerStatus("node-01"), want: true, check: wantOBMd(http.MethodGet, "power_status", ""),
		},
		"status off":                 {setup: alice, run: powerStatus("node-01"), want: false},
		"status in IPMI's words":     {setup: statusText("Chassis Power is on"), run: powerStatus("node-01"), want: true},
		"status capitalised":         {setup: statusText("Off"), run: powerStatus("node-01"), want: false},
		"status OBMd's mock reports": {setup: statusText("Mock Status"), run: powerStatus("node-01"), wantErr: node.ErrBackend, wantSub: `"Mock Status"`},
		"status with the OBM disabled": {
			setup: func(f *fakeHIL, _ *Client) { f.setProject("node-01", "alice") },
			run:   powerStatus("node-01"), wantErr: node.ErrBlocked, wantSub: `409 BlockedError "OBM is not enabled"`,
		},
		"power on a free node": {
			run: power("node-01", node.PowerOn), wantErr: node.ErrBlocked, wantSub: "OBM is not enabled",
		},
		"power on an unknown node": {
			run: power("node-99", node.PowerOn), wantErr: node.ErrNotFound,
		},
		"boot from pxe": {
			setup: alice, run: bootDevice("node-01", node.BootPXE),
			check: func(t *testing.T, f *fakeHIL) {
				wantOBMd(http.MethodPut, "boot_device", `{"bootdev": "pxe"}`)(t, f)
				if got := f.obmd.node(f.obmdID("node-01")).bootdev; got != "pxe" {
					t.Fatalf("bootdev %q", got)
				}
			},
		},
		"boot from disk":   {setup: alice, run: bootDevice("node-01", node.BootDisk), check: wantOBMd(http.MethodPut, "boot_device", `{"bootdev": "disk"}`)},
		"boot from bios":   {setup: alice, run: bootDevice("node-01", node.BootBIOS), wantErr: node.ErrBadArgument, wantSub: "not supported by HIL", check: noCalls},
		"boot from cdrom":  {setup: alice, run: bootDevice("node-01", node.BootCDROM), wantErr: node.ErrBadArgument, check: noCalls},
		"boot from floppy": {setup: alice, run: bootDevice("node-01", "floppy"), wantErr: node.ErrBadArgument, check: noCalls},
		"OBMd driver error": {
			setup: func(f *fakeHIL, c *Client) {
				alice(f, c)
				f.obmd.set(func(o *fakeOBMd) { o.failWith = http.StatusInternalServerError })
			},
			run: power("node-01", node.PowerOn), wantErr: node.ErrBackend,
			wantSub: "POST /v0/node/node-01/power_on: OBMd /node/obmd-1/power_on: 500",
		},
		"OBMd forgot the token after a HIL restart": {
			setup: func(f *fakeHIL, c *Client) {
				alice(f, c)
				f.obmd.forgetTokens()
			},
			run: power("node-01", node.PowerOn),
			check: func(t *testing.T, f *fakeHIL) {
				wantCalls(t, f, "POST /v0/node/node-01/power_on", "PUT /v0/node/node-01/obm", "POST /v0/node/node-01/power_on")
				wantOBMd(http.MethodPost, "power_on", "")(t, f)
				if !f.obmd.node(f.obmdID("node-01")).on {
					t.Fatal("node is not on")
				}
			},
		},
		"OBMd keeps refusing": {
			setup: func(f *fakeHIL, c *Client) {
				alice(f, c)
				f.obmd.set(func(o *fakeOBMd) { o.failWith = http.StatusUnauthorized })
			},
			run: powerStatus("node-01"), wantErr: ErrUnauthorized, wantSub: "OBMd /node/obmd-1/power_status: 401",
			check: func(t *testing.T, f *fakeHIL) {
				if n := len(f.obmd.requests()); n != 2 {
					t.Fatalf("OBMd got %d requests, want 2 (one retry)", n)
				}
			},
		},
		"OBMd refuses a boot device": {
			setup: func(f *fakeHIL, c *Client) {
				alice(f, c)
				f.obmd.set(func(o *fakeOBMd) { o.failWith = http.StatusBadRequest })
			},
			run: bootDevice("node-01", node.BootPXE), wantErr: node.ErrBadArgument,
		},
		"a previous owner's member gets 401": {
			user: "alice-user", password: "alice-pw", setup: ownedBy("node-01", "bob"),
			run: powerStatus("node-01"), wantErr: ErrUnauthorized, wantSub: "You do not have access to the required project.",
			check: func(t *testing.T, f *fakeHIL) {
				if n := len(f.obmd.requests()); n != 0 {
					t.Fatalf("OBMd got %d requests", n)
				}
			},
		},
	})
}

func statusText(s string) func(f *fakeHIL, c *Client) {
	return func(f *fakeHIL, c *Client) {
		ownedBy("node-01", "alice")(f, c)
		f.obmd.set(func(o *fakeOBMd) { o.status = s })
	}
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

func TestClientErrors(t *testing.T) {
	inject := func(key string, r fakeResp) func(f *fakeHIL, c *Client) {
		return func(f *fakeHIL, _ *Client) { f.setInject(key, r) }
	}
	runRows(t, map[string]row{
		"wrong password": {
			user: adminUser, password: "wrong",
			run: nodeProject("node-01"), wantErr: ErrUnauthorized, wantSub: "401 AuthorizationError",
		},
		"unknown user is 404 in HIL, unauthorized here": {
			user: "mallory", password: "x",
			run: nodeProject("node-01"), wantErr: ErrUnauthorized, wantSub: "User mallory does not exist.",
		},
		"wrong password is not hidden by connect's project creation": {
			user: "alice-user", password: "wrong",
			run: connect("node-01", "alice"), wantErr: ErrUnauthorized, wantSub: "POST /v0/project/alice/connect_node: 401",
		},
		"OBMError from HIL": {
			setup: inject("PUT /v0/node/node-01/obm", hilError(500, "OBMError", "Could not reach obmd")),
			run:   connect("node-01", "alice"), wantErr: node.ErrBackend, wantSub: `500 OBMError "Could not reach obmd"`,
		},
		"HTML 500 page": {
			setup: inject("GET /v0/node/node-01", htmlPage(500)),
			run:   nodeProject("node-01"), wantErr: node.ErrBackend, wantSub: "GET /v0/node/node-01: 500 Internal Server Error",
		},
		"malformed error body maps by status": {
			setup: inject("POST /v0/project/alice/connect_node", fakeResp{status: 409, body: `{"type": "Bloc`}),
			run:   connect("node-01", "alice"), wantErr: node.ErrBlocked, wantSub: `409 "{\"type\": \"Bloc"`,
		},
		"empty 404": {
			setup: inject("GET /v0/node/node-01", fakeResp{status: 404}),
			run:   nodeProject("node-01"), wantErr: node.ErrNotFound, wantSub: "404 Not Found",
		},
		"empty 401": {
			setup: inject("GET /v0/node/node-01", fakeResp{status: 401}),
			run:   nodeProject("node-01"), wantErr: ErrUnauthorized,
		},
		"403 from a proxy": {
			setup: inject("GET /v0/node/node-01", fakeResp{status: 403, body: "forbidden"}),
			run:   nodeProject("node-01"), wantErr: ErrUnauthorized, wantSub: `"forbidden"`,
		},
		"400 ValidationError": {
			setup: inject("POST /v0/project/alice/connect_node", hilError(400, "ValidationError", "Request arguments are not valid for this request")),
			run:   connect("node-01", "alice"), wantErr: node.ErrBadArgument, wantSub: "ValidationError",
		},
		"IllegalStateError is blocked": {
			setup: inject("POST /v0/project/alice/connect_node", hilError(409, "IllegalStateError", "nope")),
			run:   connect("node-01", "alice"), wantErr: node.ErrBlocked,
		},
		"ProjectMismatchError is owned": {
			setup: func(f *fakeHIL, c *Client) {
				ownedBy("node-01", "alice")(f, c)
				f.attach("node-01", "eth0", "alice-net")
				f.setInject("POST /v0/node/node-01/nic/eth0/detach_network", hilError(409, "ProjectMismatchError", "Node not in project"))
			},
			run: detach("node-01", "alice"), wantErr: node.ErrOwned,
		},
		"503 without a body": {
			setup: inject("GET /v0/node/node-01", fakeResp{status: 503}),
			run:   nodeProject("node-01"), wantErr: node.ErrBackend, wantSub: "503 Service Unavailable",
		},
		"a redirect other than 307 is not followed": {
			setup: inject("GET /v0/node/node-01", fakeResp{status: 302, location: "/elsewhere"}),
			run:   nodeProject("node-01"), wantErr: node.ErrBackend, wantSub: "302",
		},
		"empty success where JSON is expected": {
			setup: inject("GET /v0/node/node-01", fakeResp{status: 200}),
			run:   nodeProject("node-01"), wantErr: node.ErrBackend, wantSub: "decode 200 answer",
		},
		"success that is not JSON": {
			setup: inject("GET /v0/node/node-01", fakeResp{status: 200, body: "<html>hello</html>"}),
			run:   nodeProject("node-01"), wantErr: node.ErrBackend, wantSub: "decode 200 answer",
		},
		"202 without a status_id": {
			setup: func(f *fakeHIL, c *Client) {
				ownedBy("node-01", "alice")(f, c)
				f.attach("node-01", "eth0", "alice-net")
				f.setInject("POST /v0/node/node-01/nic/eth0/detach_network", fakeResp{status: 202, body: "{}"})
			},
			run: detach("node-01", "alice"), wantErr: node.ErrBackend, wantSub: "no status_id",
		},
	})
}

func TestClientNullAuth(t *testing.T) {
	f := newFakeHIL(t) // no users: HIL's null auth
	f.addNode("node-01", 1)
	c := newTestClient(t, f, "", "")
	ctx := t.Context()
	if err := c.Connect(ctx, "node-01", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := c.Power(ctx, "node-01", node.PowerOn); err != nil {
		t.Fatal(err)
	}
	if on, err := c.PowerStatus(ctx, "node-01"); err != nil || !on {
		t.Fatalf("status %v, %v", on, err)
	}
}

func TestClientNames(t *testing.T) {
	bad := []string{"", ".", "..", "rack/1", "../node-02", "node-01/obm", "a\nb", "a\x00", "\xff"}
	for _, name := range bad {
		t.Run("bad "+name, func(t *testing.T) {
			f := newFixture(t)
			c := newTestClient(t, f, adminUser, adminPassword)
			ctx := t.Context()
			errs := []error{
				c.Connect(ctx, name, "alice"), c.Connect(ctx, "node-01", name),
				c.Detach(ctx, name, "alice"), c.Detach(ctx, "node-01", name),
				c.Power(ctx, name, node.PowerOn), c.SetBootDevice(ctx, name, node.BootPXE, false),
			}
			_, err := c.NodeProject(ctx, name)
			errs = append(errs, err)
			_, err = c.PowerStatus(ctx, name)
			errs = append(errs, err)
			for i, err := range errs {
				if !errors.Is(err, node.ErrBadArgument) {
					t.Errorf("call %d: error %v, want node.ErrBadArgument", i, err)
				}
			}
			wantCalls(t, f)
		})
	}
	// Labels HIL can hold reach it as one path segment, unchanged.
	for _, name := range []string{"node 01", "n?x=1#frag", "a%2Fb", "名前", "a+b;c"} {
		t.Run("good "+name, func(t *testing.T) {
			f := newFixture(t)
			f.addNode(name, 1)
			c := newTestClient(t, f, adminUser, adminPassword)
			project := "team " + name
			if err := c.Connect(t.Context(), name, project); err != nil {
				t.Fatal(err)
			}
			if err := c.Power(t.Context(), name, node.PowerOn); err != nil {
				t.Fatal(err)
			}
			wantState(t, f, name, fakeNodeState{Project: project, OBMEnabled: true})
			wantCalls(t, f, "PUT /v0/project/"+project, "POST /v0/project/"+project+"/connect_node",
				"PUT /v0/node/"+name+"/obm", "POST /v0/node/"+name+"/power_on")
		})
	}
}

func TestClientDeadlines(t *testing.T) {
	block := func(f *fakeHIL, path string) {
		f.configure(func(f *fakeHIL) {
			f.before = func(r *http.Request) {
				if r.URL.Path == path {
					<-r.Context().Done()
				}
			}
		})
	}
	t.Run("caller's deadline", func(t *testing.T) {
		f := newFixture(t)
		block(f, "/v0/node/node-01")
		c := newTestClient(t, f, adminUser, adminPassword)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.NodeProject(ctx, "node-01")
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, node.ErrBackend) {
			t.Fatalf("error %v, want the caller's deadline and not a backend failure", err)
		}
	})
	t.Run("per-call timeout", func(t *testing.T) {
		f := newFixture(t)
		block(f, "/v0/node/node-01")
		c := newTestClient(t, f, adminUser, adminPassword)
		c.timeout = 50 * time.Millisecond
		_, err := c.NodeProject(t.Context(), "node-01")
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, node.ErrBackend) || !errors.Is(err, node.ErrUnavailable) {
			t.Fatalf("error %v, want a deadline that counts as HIL unavailable", err)
		}
	})
	t.Run("power calls wait for OBMd's queue beyond the plain timeout", func(t *testing.T) {
		f := newFixture(t)
		ownedBy("node-01", "alice")(f, nil)
		f.configure(func(f *fakeHIL) {
			f.before = func(r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/v0/node/node-01/") { // power_on, obm: OBMd busy
					time.Sleep(150 * time.Millisecond)
				}
			}
		})
		c := newTestClient(t, f, adminUser, adminPassword)
		c.timeout, c.obmTimeout = 50*time.Millisecond, 5*time.Second // only OBM calls below
		if err := c.Power(t.Context(), "node-01", node.PowerOn); err != nil {
			t.Fatalf("power on behind a busy OBMd: %v", err)
		}
		if err := c.setOBM(t.Context(), "node-01", false); err != nil {
			t.Fatalf("OBM disable behind a busy OBMd: %v", err)
		}
	})
	t.Run("deadline while waiting for a networking action", func(t *testing.T) {
		f := newFixture(t)
		ownedBy("node-01", "alice")(f, nil)
		f.attach("node-01", "eth0", "alice-net")
		f.configure(func(f *fakeHIL) { f.stuckActions = true })
		c := newTestClient(t, f, adminUser, adminPassword)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		err := c.Detach(ctx, "node-01", "alice")
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, node.ErrBackend) {
			t.Fatalf("error %v, want the caller's deadline", err)
		}
		wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true, Networks: []string{"eth0:alice-net"}, Pending: true})
	})
	t.Run("deadline at OBMd", func(t *testing.T) {
		f := newFixture(t)
		ownedBy("node-01", "alice")(f, nil)
		c := newTestClient(t, f, adminUser, adminPassword)
		c.obmTimeout = 50 * time.Millisecond
		f.obmd.set(func(o *fakeOBMd) { o.hang = true })
		err := c.Power(t.Context(), "node-01", node.PowerOn)
		checkErr(t, f, err, context.DeadlineExceeded, "POST /v0/node/node-01/power_on")
	})
}

func TestNewClient(t *testing.T) {
	tests := map[string]struct {
		cfg     ClientConfig
		base    string
		wantSub string
	}{
		"host and port":              {cfg: ClientConfig{Endpoint: "http://hil.example:5000"}, base: "http://hil.example:5000"},
		"https with a prefix":        {cfg: ClientConfig{Endpoint: "https://hil.example/api/hil/"}, base: "https://hil.example/api/hil"},
		"credentials":                {cfg: ClientConfig{Endpoint: "http://h", Username: "u", Password: "p"}, base: "http://h"},
		"empty":                      {cfg: ClientConfig{}, wantSub: "is not an http(s)://host URL"},
		"no scheme":                  {cfg: ClientConfig{Endpoint: "hil.example:5000"}, wantSub: "not an http(s)"},
		"ftp":                        {cfg: ClientConfig{Endpoint: "ftp://hil.example"}, wantSub: "not an http(s)"},
		"with /v0":                   {cfg: ClientConfig{Endpoint: "http://hil.example/v0/"}, wantSub: "must not include /v0"},
		"userinfo":                   {cfg: ClientConfig{Endpoint: "http://u:pw@hil.example"}, wantSub: "must not carry credentials"},
		"query":                      {cfg: ClientConfig{Endpoint: "http://hil.example/?x=1"}, wantSub: "query"},
		"password, no user":          {cfg: ClientConfig{Endpoint: "http://h", Password: "hunter2"}, wantSub: "password without username"},
		"negative timeout":           {cfg: ClientConfig{Endpoint: "http://h", Timeout: -time.Second}, wantSub: "negative timeout"},
		"unparsable":                 {cfg: ClientConfig{Endpoint: "http://h:port:x"}, wantSub: "endpoint"},
		"unparsable with a password": {cfg: ClientConfig{Endpoint: "http://u:hunter2@h:port:x", Password: "hunter2", Username: "u"}, wantSub: "invalid port"},
		"control characters":         {cfg: ClientConfig{Endpoint: "http://h/\x7f"}, wantSub: "endpoint"},
		"trailing slashes alone":     {cfg: ClientConfig{Endpoint: "http://h//"}, base: "http://h"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := NewClient(tc.cfg)
			if tc.wantSub != "" {
				if !errors.Is(err, node.ErrBadArgument) || !strings.Contains(err.Error(), tc.wantSub) {
					t.Fatalf("error %v, want node.ErrBadArgument with %q", err, tc.wantSub)
				}
				if tc.cfg.Password != "" && strings.Contains(err.Error(), tc.cfg.Password) {
					t.Fatal("error leaks the password")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.base != tc.base || c.timeout != defaultTimeout {
				t.Fatalf("base %q timeout %s", c.base, c.timeout)
			}
		})
	}
	t.Run("the caller's http.Client is not modified", func(t *testing.T) {
		hc := &http.Client{}
		c, err := NewClient(ClientConfig{Endpoint: "http://h", HTTPClient: hc, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if hc.CheckRedirect != nil || c.hc == hc || c.hc.CheckRedirect == nil || c.timeout != time.Second {
			t.Fatal("NewClient changed the caller's http.Client or lost its settings")
		}
	})
}

// TestHandOver walks a node from one project to another in HIL's order
// (power off, detach networks, disable OBM, detach, connect, enable OBM)
// and checks HIL's and OBMd's state at each step.
func TestHandOver(t *testing.T) {
	f := newFixture(t)
	c := newTestClient(t, f, adminUser, adminPassword)
	aliceUser := newTestClient(t, f, "alice-user", "alice-pw")
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	wantPower := func(c *Client, want bool) {
		t.Helper()
		on, err := c.PowerStatus(ctx, "node-01")
		must(err)
		if on != want {
			t.Fatalf("power %v, want %v", on, want)
		}
	}

	// alice leases node-01 and uses it.
	must(c.Connect(ctx, "node-01", "alice"))
	wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true})
	aliceToken := f.state("node-01").Token
	must(aliceUser.Power(ctx, "node-01", node.PowerOn))
	wantPower(aliceUser, true)
	f.attach("node-01", "eth0", "alice-net")
	wantState(t, f, "node-01", fakeNodeState{Project: "alice", OBMEnabled: true, Networks: []string{"eth0:alice-net"}})

	// The lease ends: power off, then detach.
	must(c.Power(ctx, "node-01", node.PowerOff))
	wantPower(c, false)
	must(c.Detach(ctx, "node-01", "alice"))
	wantState(t, f, "node-01", fakeNodeState{})
	if p, err := c.NodeProject(ctx, "node-01"); err != nil || p != "" {
		t.Fatalf("project %q, %v", p, err)
	}
	if code := obmdStatusWith(t, f, aliceToken); code != http.StatusUnauthorized {
		t.Fatalf("alice's old OBMd token answers %d, want 401", code)
	}
	_, err := c.PowerStatus(ctx, "node-01")
	checkErr(t, f, err, node.ErrBlocked, "OBM is not enabled")

	// bob leases it.
	must(c.Connect(ctx, "node-01", "bob"))
	wantState(t, f, "node-01", fakeNodeState{Project: "bob", OBMEnabled: true})
	bobToken := f.state("node-01").Token
	if bobToken == aliceToken {
		t.Fatal("bob got alice's token")
	}
	must(c.Power(ctx, "node-01", node.PowerCycle))
	wantPower(c, true)
	if code := obmdStatusWith(t, f, aliceToken); code != http.StatusUnauthorized {
		t.Fatalf("alice's old OBMd token answers %d after bob's connect, want 401", code)
	}
	if code := obmdStatusWith(t, f, bobToken); code != http.StatusOK {
		t.Fatalf("bob's token answers %d", code)
	}

	// alice and her user can no longer touch it.
	_, err = aliceUser.PowerStatus(ctx, "node-01")
	checkErr(t, f, err, ErrUnauthorized, "401 AuthorizationError")
	checkErr(t, f, c.Detach(ctx, "node-01", "alice"), node.ErrOwned, `"bob"`)
	checkErr(t, f, c.Connect(ctx, "node-01", "alice"), node.ErrOwned, `"bob"`)
	wantState(t, f, "node-01", fakeNodeState{Project: "bob", OBMEnabled: true})
	if f.state("node-01").Token != bobToken {
		t.Fatal("alice's failed calls changed bob's token")
	}
	for _, r := range f.obmd.requests() {
		if r.Authorization != "" {
			t.Fatalf("OBMd received HIL's credentials on %s %s", r.Method, r.Path)
		}
	}
}

// obmdStatusWith asks OBMd for node-01's power status with a token, as a
// former owner holding an old redirect URL would.
func obmdStatusWith(t *testing.T, f *fakeHIL, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
		f.obmd.srv.URL+"/node/"+f.obmdID("node-01")+"/power_status?token="+token, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
