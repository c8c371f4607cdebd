package appliance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/api"
	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/store"
)

const testToken = "test-token-0123456789"

// testNow is where every test's clock starts. It is deliberately not a
// whole second, so that the normalisation of lease times shows.
func testNow() time.Time { return time.Date(2026, 3, 2, 9, 30, 0, 250_000_000, time.UTC) }

// t0 is testNow normalised: the start of a lease that starts "now".
func t0() time.Time { return lease.Normalize(testNow()) }

// at formats t0+d as RFC 3339, as a client would send it.
func at(d time.Duration) string { return t0().Add(d).Format(time.RFC3339) }

// testClock is the API's injected clock; tests move it by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// apiEnv is an API over a fresh SQLite store, served through its real
// handler (authentication, cross-origin protection and router).
type apiEnv struct {
	api   *api.API
	h     http.Handler
	clock *testClock
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &testClock{now: testNow()}
	p := Parts{Store: st, Limits: lease.DefaultLimits(), Token: testToken, Now: clk.Now}
	return &apiEnv{api: api.New(api.Config{Store: st, Limits: lease.DefaultLimits(), Token: testToken, Now: clk.Now}), h: p.Handler(), clock: clk}
}

// apiReq returns an authenticated request; a body is declared as JSON.
func apiReq(method, target, body string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

type apiReply struct {
	status int
	header http.Header
	body   []byte
}

func (e *apiEnv) serve(r *http.Request) apiReply {
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return apiReply{w.Code, w.Result().Header, w.Body.Bytes()}
}

func (e *apiEnv) call(method, target, body string) apiReply {
	return e.serve(apiReq(method, target, body))
}

// must makes an authenticated call that has to answer status, decoding the
// answer into out unless it is nil.
func (e *apiEnv) must(t *testing.T, status int, method, target, body string, out any) apiReply {
	t.Helper()
	r := e.call(method, target, body)
	if r.status != status {
		t.Fatalf("%s %s %s: got %d, want %d: %s", method, target, body, r.status, status, r.body)
	}
	if out != nil {
		r.decode(t, out)
	}
	return r
}

func (r apiReply) decode(t *testing.T, out any) {
	t.Helper()
	if err := json.Unmarshal(r.body, out); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// apiError is the JSON body of every error answer.
type apiError struct {
	Error    string      `json:"error"`
	Fields   []string    `json:"fields"`
	Conflict *wire.Lease `json:"conflict"`
}

// checkError asserts a JSON error answer with status, a message containing
// sub and, if fields is not nil, exactly those invalid fields.
func checkError(t *testing.T, r apiReply, status int, sub string, fields []string) apiError {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e apiError
	r.decode(t, &e)
	if e.Error == "" || !strings.Contains(e.Error, sub) {
		t.Errorf("error %q does not contain %q", e.Error, sub)
	}
	if fields != nil && !slices.Equal(e.Fields, fields) {
		t.Errorf("fields %q, want %q", e.Fields, fields)
	}
	return e
}

// createLease leases node to tenant over [t0+from, t0+to) and returns it.
func (e *apiEnv) createLease(t *testing.T, node, tenant string, from, to time.Duration) wire.Lease {
	t.Helper()
	var l wire.Lease
	e.must(t, http.StatusCreated, http.MethodPost, "/api/v1/leases",
		fmt.Sprintf(`{"node":%q,"tenant":%q,"start":%q,"end":%q}`, node, tenant, at(from), at(to)), &l)
	return l
}

// seed registers nodes n1, n2 and tenants t1, t2.
func (e *apiEnv) seed(t *testing.T) {
	t.Helper()
	for _, n := range []string{"n1", "n2"} {
		e.must(t, http.StatusCreated, http.MethodPost, "/api/v1/nodes", `{"name":"`+n+`","bmc":{"host":"10.0.0.1","user":"admin"}}`, nil)
	}
	for _, n := range []string{"t1", "t2"} {
		e.must(t, http.StatusCreated, http.MethodPost, "/api/v1/tenants", `{"name":"`+n+`"}`, nil)
	}
}

func TestAPIAuthentication(t *testing.T) {
	routes := []struct {
		method, path string
		authed       int // the status with the right token
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodGet, "/api/v1/openapi.json", http.StatusOK},
		{http.MethodGet, "/api/v1/nodes", http.StatusOK},
		{http.MethodPost, "/api/v1/nodes", http.StatusBadRequest},
		{http.MethodGet, "/api/v1/nodes/n1", http.StatusNotFound},
		{http.MethodDelete, "/api/v1/nodes/n1", http.StatusNotFound},
		{http.MethodGet, "/api/v1/tenants", http.StatusOK},
		{http.MethodPost, "/api/v1/tenants", http.StatusBadRequest},
		{http.MethodGet, "/api/v1/tenants/t1", http.StatusNotFound},
		{http.MethodDelete, "/api/v1/tenants/t1", http.StatusNotFound},
		{http.MethodGet, "/api/v1/leases", http.StatusOK},
		{http.MethodPost, "/api/v1/leases", http.StatusBadRequest},
		{http.MethodGet, "/api/v1/leases/1", http.StatusNotFound},
		{http.MethodPost, "/api/v1/leases/1/cancel", http.StatusNotFound},
		{http.MethodPost, "/api/v1/leases/1/extend", http.StatusBadRequest},
		{http.MethodGet, "/api/v1/audit", http.StatusOK},
		{http.MethodGet, "/api/v1/nope", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
		// Only GET /healthz is public; other methods on it are not.
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed},
	}
	credentials := map[string]string{
		"no Authorization header": "",
		"wrong token":             "Bearer wrong-token-0123456789",
		"token prefix":            "Bearer " + testToken[:len(testToken)-1],
		"token with a suffix":     "Bearer " + testToken + "x",
		"token without scheme":    testToken,
		"basic scheme":            "Basic YWRtaW46" + testToken,
		"scheme without space":    "Bearer" + testToken,
	}
	e := newAPIEnv(t)
	for _, rt := range routes {
		for cred, header := range credentials {
			t.Run(rt.method+" "+rt.path+"/"+cred, func(t *testing.T) {
				r := httptest.NewRequest(rt.method, rt.path, nil)
				if header != "" {
					r.Header.Set("Authorization", header)
				}
				rep := e.serve(r)
				checkError(t, rep, http.StatusUnauthorized, "bearer token", nil)
				if got := rep.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
					t.Errorf("WWW-Authenticate %q, want a Bearer challenge", got)
				}
				checkSecurityHeaders(t, rep)
			})
		}
		t.Run(rt.method+" "+rt.path+"/right token", func(t *testing.T) {
			rep := e.call(rt.method, rt.path, "")
			if rep.status != rt.authed {
				t.Fatalf("got %d, want %d: %s", rep.status, rt.authed, rep.body)
			}
			if rep.status >= 400 {
				checkError(t, rep, rt.authed, "", nil)
			}
			if rep.header.Get("WWW-Authenticate") != "" {
				t.Errorf("authenticated answer carries a WWW-Authenticate challenge")
			}
			checkSecurityHeaders(t, rep)
		})
	}
}

// TestAPIMethodNotAllowed checks that a known path asked with the wrong
// method answers 405, not 404, wherever its route sits in the router.
func TestAPIMethodNotAllowed(t *testing.T) {
	tests := map[string]struct{ method, path string }{
		"PUT nodes":          {http.MethodPut, "/api/v1/nodes"},
		"PATCH a node":       {http.MethodPatch, "/api/v1/nodes/n1"},
		"DELETE leases":      {http.MethodDelete, "/api/v1/leases"},
		"POST a lease":       {http.MethodPost, "/api/v1/leases/1"},
		"GET cancel":         {http.MethodGet, "/api/v1/leases/1/cancel"},
		"DELETE the audit":   {http.MethodDelete, "/api/v1/audit"},
		"POST the OpenAPI":   {http.MethodPost, "/api/v1/openapi.json"},
		"POST metrics":       {http.MethodPost, "/metrics"},
		"POST healthz":       {http.MethodPost, "/healthz"},
		"DELETE the tenants": {http.MethodDelete, "/api/v1/tenants"},
	}
	e := newAPIEnv(t)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkError(t, e.call(tc.method, tc.path, ""), http.StatusMethodNotAllowed, "method not allowed", nil)
		})
	}
}

func checkSecurityHeaders(t *testing.T, r apiReply) {
	t.Helper()
	for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "X-Frame-Options": "DENY"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

func TestAPIHealthzIsPublic(t *testing.T) {
	e := newAPIEnv(t)
	for name, header := range map[string]string{"no token": "", "wrong token": "Bearer nope", "right token": "Bearer " + testToken} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/healthz", nil)
			if header != "" {
				r.Header.Set("Authorization", header)
			}
			rep := e.serve(r)
			var body map[string]string
			rep.decode(t, &body)
			if rep.status != http.StatusOK || body["status"] != "ok" {
				t.Fatalf("got %d %s, want 200 with status ok", rep.status, rep.body)
			}
			checkSecurityHeaders(t, rep)
		})
	}
}

func TestAPIEmptyTokenRefusesEverything(t *testing.T) {
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := Parts{Store: st, Limits: lease.DefaultLimits(), Now: testNow}.Handler()
	for name, header := range map[string]string{"empty bearer": "Bearer ", "no header": "", "some token": "Bearer x"} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/nodes", nil)
			r.Header.Set("Authorization", header)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401: %s", w.Code, w.Body)
			}
		})
	}
}

func TestAPICrossOriginProtection(t *testing.T) {
	tests := map[string]struct {
		method, path, body string
		header             map[string]string
		status             int
	}{
		"cross-site POST":             {method: http.MethodPost, path: "/api/v1/tenants", body: `{"name":"t9"}`, header: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: http.StatusForbidden},
		"same-site POST":              {method: http.MethodPost, path: "/api/v1/tenants", body: `{"name":"t9"}`, header: map[string]string{"Sec-Fetch-Site": "same-site"}, status: http.StatusForbidden},
		"cross-site DELETE":           {method: http.MethodDelete, path: "/api/v1/tenants/t1", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: http.StatusForbidden},
		"old browser, foreign Origin": {method: http.MethodPost, path: "/api/v1/tenants", body: `{"name":"t9"}`, header: map[string]string{"Origin": "https://evil.example"}, status: http.StatusForbidden},
		"same-origin POST":            {method: http.MethodPost, path: "/api/v1/tenants", body: `{"name":"t9"}`, header: map[string]string{"Sec-Fetch-Site": "same-origin"}, status: http.StatusCreated},
		"matching Origin":             {method: http.MethodPost, path: "/api/v1/tenants", body: `{"name":"t9"}`, header: map[string]string{"Origin": "http://example.com"}, status: http.StatusCreated},
		"non-browser client":          {method: http.MethodPost, path: "/api/v1/tenants", body: `{"name":"t9"}`, status: http.StatusCreated},
		"cross-site GET is a read":    {method: http.MethodGet, path: "/api/v1/tenants", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: http.StatusOK},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newAPIEnv(t)
			e.must(t, http.StatusCreated, http.MethodPost, "/api/v1/tenants", `{"name":"t1"}`, nil)
			before := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/tenants", "", nil).body
			r := apiReq(tc.method, tc.path, tc.body)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			if rep := e.serve(r); rep.status != tc.status {
				t.Fatalf("got %d, want %d: %s", rep.status, tc.status, rep.body)
			}
			after := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/tenants", "", nil).body
			if changed := !bytes.Equal(before, after); changed != (tc.status == http.StatusCreated) {
				t.Errorf("tenants changed: %t, want %t:\n%s", changed, !changed, after)
			}
		})
	}
}

// tooBig is a JSON object just over the API's body limit.
func tooBig() string {
	return `{"name":"n9","description":"` + strings.Repeat("a", httpx.DefaultBodyLimit) + `"}`
}

func TestAPICreateNode(t *testing.T) {
	bmc := func(host string, port int, user string) inventory.BMC {
		return inventory.BMC{Host: host, Port: port, User: user}
	}
	tests := map[string]struct {
		body        string
		contentType string // application/json when empty
		status      int
		errSub      string
		fields      []string
		want        inventory.Node // for 201, CreatedAt aside
	}{
		"minimal": {body: `{"name":"n9","macs":["52:54:00:00:00:09"]}`, status: 201, want: inventory.Node{Name: "n9", MACs: []string{"52:54:00:00:00:09"}}},
		"neither MAC nor BMC": {body: `{"name":"n9","description":"nothing to boot or power"}`, status: 400, errSub: "at least one MAC address (macs) or a BMC (bmc.host)",
			fields: []string{"macs", "bmc.host"}},
		"MACs normalised and sorted": {
			body:   `{"name":"n9","macs":["52-54-00-AB-CD-02","5254.00ab.cd03"," 52:54:00:AB:CD:01 "]}`,
			status: 201,
			want:   inventory.Node{Name: "n9", MACs: []string{"52:54:00:ab:cd:01", "52:54:00:ab:cd:02", "52:54:00:ab:cd:03"}},
		},
		"BMC port defaults to 623": {body: `{"name":"n9","bmc":{"host":"10.0.0.5","user":"admin"}}`, status: 201,
			want: inventory.Node{Name: "n9", MACs: []string{}, BMC: bmc("10.0.0.5", 623, "admin")}},
		"BMC host:port in host": {body: `{"name":"n9","bmc":{"host":"BMC-9.Example.org:6230","user":"admin"}}`, status: 201,
			want: inventory.Node{Name: "n9", MACs: []string{}, BMC: bmc("bmc-9.example.org", 6230, "admin")}},
		"BMC IPv6 with port": {body: `{"name":"n9","bmc":{"host":"[fd00::9]:6230","user":"root"}}`, status: 201,
			want: inventory.Node{Name: "n9", MACs: []string{}, BMC: bmc("fd00::9", 6230, "root")}},
		"BMC explicit port": {body: `{"name":"n9","bmc":{"host":"10.0.0.5","port":6231,"user":"admin"}}`, status: 201,
			want: inventory.Node{Name: "n9", MACs: []string{}, BMC: bmc("10.0.0.5", 6231, "admin")}},
		"JSON with charset": {body: `{"name":"n9","description":"rack 3, slot 4","macs":["52:54:00:00:00:09"]}`, contentType: "application/json; charset=utf-8", status: 201,
			want: inventory.Node{Name: "n9", Description: "rack 3, slot 4", MACs: []string{"52:54:00:00:00:09"}}},

		"tenant BMC address chosen": {body: `{"name":"n9","macs":["52:54:00:00:00:09"],"tenant_bmc_address":"198.18.7.9"}`, status: 201,
			want: inventory.Node{Name: "n9", MACs: []string{"52:54:00:00:00:09"}, TenantBMCAddress: "198.18.7.9"}},
		"tenant BMC address taken": {body: `{"name":"n9","macs":["52:54:00:00:00:09"],"tenant_bmc_address":"198.18.0.1"}`, status: 409, errSub: `198.18.0.1 belongs to node "existing"`},
		"tenant BMC address outside the range": {body: `{"name":"n9","macs":["52:54:00:00:00:09"],"tenant_bmc_address":"10.1.2.3"}`, status: 400,
			errSub: "not a host address of the tenant-facing BMC range 198.18.0.0/15", fields: []string{"tenant_bmc_address"}},
		"tenant BMC address with a port": {body: `{"name":"n9","macs":["52:54:00:00:00:09"],"tenant_bmc_address":"198.18.0.9:623"}`, status: 400,
			errSub: "not a bare IPv4", fields: []string{"tenant_bmc_address"}},
		"tenant BMC address a name": {body: `{"name":"n9","macs":["52:54:00:00:00:09"],"tenant_bmc_address":"bmc-9.example.org"}`, status: 400,
			errSub: "not a bare IPv4", fields: []string{"tenant_bmc_address"}},
		"tenant BMC address the network": {body: `{"name":"n9","macs":["52:54:00:00:00:09"],"tenant_bmc_address":"198.18.0.0"}`, status: 400,
			errSub: "not a host address", fields: []string{"tenant_bmc_address"}},
		"real BMC at a tenant-facing address": {body: `{"name":"n9","bmc":{"host":"198.18.0.1","user":"admin"}}`, status: 400,
			errSub: "tenant-facing BMC address of node existing", fields: []string{"bmc.host"}},
		"duplicate name":        {body: `{"name":"existing","macs":["52:54:00:00:00:09"]}`, status: 409, errSub: "already exists"},
		"MAC of another node":   {body: `{"name":"n9","macs":["52-54-00-00-00-01"]}`, status: 409, errSub: `belongs to node "existing"`},
		"upper-case name":       {body: `{"name":"Node9","macs":["52:54:00:00:00:09"]}`, status: 400, errSub: "not a DNS label", fields: []string{"name"}},
		"missing name":          {body: `{"macs":["52:54:00:00:00:09"]}`, status: 400, errSub: "required", fields: []string{"name"}},
		"name too long":         {body: `{"name":"` + strings.Repeat("n", 41) + `","macs":["52:54:00:00:00:09"]}`, status: 400, errSub: "at most 40", fields: []string{"name"}},
		"bad MAC":               {body: `{"name":"n9","macs":["52:54:00:zz:00:01"]}`, status: 400, errSub: "48-bit MAC", fields: []string{"macs[0]"}},
		"EUI-64 is not a MAC":   {body: `{"name":"n9","macs":["52:54:00:12:34:56:78:9a"]}`, status: 400, errSub: "48-bit MAC", fields: []string{"macs[0]"}},
		"MAC listed twice":      {body: `{"name":"n9","macs":["52:54:00:00:00:02","52-54-00-00-00-02"]}`, status: 400, errSub: "listed twice", fields: []string{"macs[1]"}},
		"bad BMC host":          {body: `{"name":"n9","bmc":{"host":"bmc_9!","user":"admin"}}`, status: 400, errSub: "host[:port]", fields: []string{"bmc.host"}},
		"BMC port out of range": {body: `{"name":"n9","bmc":{"host":"10.0.0.5:70000","user":"admin"}}`, status: 400, errSub: "1-65535", fields: []string{"bmc.host"}},
		"BMC without user":      {body: `{"name":"n9","bmc":{"host":"10.0.0.5"}}`, status: 400, errSub: "IPMI user", fields: []string{"bmc.user"}},
		"every problem at once": {body: `{"name":"N9","macs":["x"]}`, status: 400, fields: []string{"name", "macs[0]"}},
		"unknown field":         {body: `{"name":"n9","bmc_password":"hunter2"}`, status: 400, errSub: `unknown field "bmc_password"`},
		"wrong type":            {body: `{"name":9}`, status: 400, errSub: "must be a JSON string", fields: []string{"name"}},
		"malformed JSON":        {body: `{"name" "n9"}`, status: 400, errSub: "malformed JSON"},
		"truncated JSON":        {body: `{"name":"n9"`, status: 400, errSub: "unexpected EOF"},
		"empty body":            {body: ``, contentType: "application/json", status: 400, errSub: "JSON object is required"},
		"second object after":   {body: `{"name":"n9"} {"name":"n8"}`, status: 400, errSub: "after the JSON object"},
		"closing bracket after": {body: `{"name":"n9"}]`, status: 400, errSub: "after the JSON object"},
		"closing brace after":   {body: `{"name":"n9"}}`, status: 400, errSub: "after the JSON object"},
		"text/plain":            {body: `{"name":"n9"}`, contentType: "text/plain", status: 415, errSub: "application/json"},
		"form":                  {body: `name=n9`, contentType: "application/x-www-form-urlencoded", status: 415, errSub: "application/json"},
		"body over 1 MiB":       {body: tooBig(), status: 413, errSub: "larger than 1048576 bytes"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newAPIEnv(t)
			e.must(t, http.StatusCreated, http.MethodPost, "/api/v1/nodes", `{"name":"existing","macs":["52:54:00:00:00:01"]}`, nil)
			before := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/nodes", "", nil).body
			r := apiReq(http.MethodPost, "/api/v1/nodes", tc.body)
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			rep := e.serve(r)
			if tc.status != http.StatusCreated {
				checkError(t, rep, tc.status, tc.errSub, tc.fields)
				if after := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/nodes", "", nil).body; !bytes.Equal(before, after) {
					t.Errorf("a refused request changed the nodes:\n%s", after)
				}
				return
			}
			if rep.status != http.StatusCreated {
				t.Fatalf("got %d, want 201: %s", rep.status, rep.body)
			}
			var got, stored inventory.Node
			rep.decode(t, &got)
			e.must(t, http.StatusOK, http.MethodGet, "/api/v1/nodes/"+tc.want.Name, "", &stored)
			tc.want.CreatedAt = testNow()
			if tc.want.TenantBMCAddress == "" {
				tc.want.TenantBMCAddress = "198.18.0.2" // the first free one: "existing" has .1
			}
			for _, n := range []inventory.Node{got, stored} {
				if !n.CreatedAt.Equal(tc.want.CreatedAt) {
					t.Errorf("created_at %s, want %s", n.CreatedAt, tc.want.CreatedAt)
				}
				n.CreatedAt = tc.want.CreatedAt
				if !reflect.DeepEqual(n, tc.want) {
					t.Errorf("got %+v, want %+v", n, tc.want)
				}
			}
		})
	}
}

func TestAPICreateTenant(t *testing.T) {
	tests := map[string]struct {
		body        string
		contentType string
		status      int
		errSub      string
		fields      []string
		want        inventory.Tenant
	}{
		"minimal": {body: `{"name":"t9"}`, status: 201, want: inventory.Tenant{Name: "t9", State: inventory.TenantRegistered}},
		"with its own Foreman": {body: `{"name":"t9","description":"Lab A","foreman_url":"https://foreman.lab-a.example"}`, status: 201,
			want: inventory.Tenant{Name: "t9", Description: "Lab A", ForemanURL: "https://foreman.lab-a.example", State: inventory.TenantRegistered}},

		"duplicate name":           {body: `{"name":"existing"}`, status: 409, errSub: "already exists"},
		"bad name":                 {body: `{"name":"t_9"}`, status: 400, errSub: "not a DNS label", fields: []string{"name"}},
		"Foreman not http":         {body: `{"name":"t9","foreman_url":"ftp://foreman.example"}`, status: 400, errSub: "http(s) URL", fields: []string{"foreman_url"}},
		"Foreman with credentials": {body: `{"name":"t9","foreman_url":"https://admin:pw@foreman.example"}`, status: 400, errSub: "credentials", fields: []string{"foreman_url"}},
		"control character":        {body: `{"name":"t9","description":"a\nb"}`, status: 400, errSub: "control characters", fields: []string{"description"}},
		"state is not settable":    {body: `{"name":"t9","state":"ready"}`, status: 400, errSub: `unknown field "state"`},
		"text/plain":               {body: `{"name":"t9"}`, contentType: "text/plain", status: 415, errSub: "application/json"},
		"body over 1 MiB":          {body: tooBig(), status: 413, errSub: "larger than"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newAPIEnv(t)
			e.must(t, http.StatusCreated, http.MethodPost, "/api/v1/tenants", `{"name":"existing"}`, nil)
			before := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/tenants", "", nil).body
			r := apiReq(http.MethodPost, "/api/v1/tenants", tc.body)
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			rep := e.serve(r)
			if tc.status != http.StatusCreated {
				checkError(t, rep, tc.status, tc.errSub, tc.fields)
				if after := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/tenants", "", nil).body; !bytes.Equal(before, after) {
					t.Errorf("a refused request changed the tenants:\n%s", after)
				}
				return
			}
			if rep.status != http.StatusCreated {
				t.Fatalf("got %d, want 201: %s", rep.status, rep.body)
			}
			var got, stored inventory.Tenant
			rep.decode(t, &got)
			e.must(t, http.StatusOK, http.MethodGet, "/api/v1/tenants/"+tc.want.Name, "", &stored)
			for _, tn := range []inventory.Tenant{got, stored} {
				if !tn.CreatedAt.Equal(testNow()) {
					t.Errorf("created_at %s, want %s", tn.CreatedAt, testNow())
				}
				tn.CreatedAt = time.Time{}
				if tn != tc.want {
					t.Errorf("got %+v, want %+v", tn, tc.want)
				}
			}
		})
	}
}

func TestAPIGetAndDeleteInventory(t *testing.T) {
	tests := map[string]struct {
		method, path string
		status       int
		errSub       string
		fields       []string
	}{
		"get node":             {method: http.MethodGet, path: "/api/v1/nodes/n1", status: 200},
		"get missing node":     {method: http.MethodGet, path: "/api/v1/nodes/ghost", status: 404, errSub: `node "ghost"`},
		"get bad node name":    {method: http.MethodGet, path: "/api/v1/nodes/Bad_Name", status: 400, fields: []string{"name"}},
		"delete node":          {method: http.MethodDelete, path: "/api/v1/nodes/n1", status: 204},
		"delete missing node":  {method: http.MethodDelete, path: "/api/v1/nodes/ghost", status: 404, errSub: `node "ghost"`},
		"delete bad node name": {method: http.MethodDelete, path: "/api/v1/nodes/-n1", status: 400, fields: []string{"name"}},
		"get tenant":           {method: http.MethodGet, path: "/api/v1/tenants/t1", status: 200},
		"get missing tenant":   {method: http.MethodGet, path: "/api/v1/tenants/ghost", status: 404, errSub: `tenant "ghost"`},
		"delete tenant":        {method: http.MethodDelete, path: "/api/v1/tenants/t1", status: 204},
		"delete missing":       {method: http.MethodDelete, path: "/api/v1/tenants/ghost", status: 404, errSub: `tenant "ghost"`},
		"delete bad name":      {method: http.MethodDelete, path: "/api/v1/tenants/T1", status: 400, fields: []string{"name"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newAPIEnv(t)
			e.seed(t)
			rep := e.call(tc.method, tc.path, "")
			switch tc.status {
			case http.StatusOK:
				var got struct{ Name string }
				rep.decode(t, &got)
				if rep.status != tc.status || got.Name != tc.path[strings.LastIndex(tc.path, "/")+1:] {
					t.Fatalf("got %d %s", rep.status, rep.body)
				}
			case http.StatusNoContent:
				if rep.status != tc.status || len(rep.body) != 0 {
					t.Fatalf("got %d %q, want an empty 204", rep.status, rep.body)
				}
				e.must(t, http.StatusNotFound, http.MethodGet, tc.path, "", nil)
			default:
				checkError(t, rep, tc.status, tc.errSub, tc.fields)
			}
		})
	}
}

func TestAPIDeleteWithLiveLease(t *testing.T) {
	for kind, path := range map[string]string{"node": "/api/v1/nodes/n1", "tenant": "/api/v1/tenants/t1"} {
		t.Run(kind, func(t *testing.T) {
			e := newAPIEnv(t)
			e.seed(t)
			l := e.createLease(t, "n1", "t1", time.Hour, 2*time.Hour)
			// Scheduled, then active: refused, and nothing removed.
			for _, now := range []time.Time{t0(), t0().Add(90 * time.Minute), t0().Add(2*time.Hour - time.Millisecond)} {
				e.clock.Set(now)
				checkError(t, e.call(http.MethodDelete, path, ""), http.StatusConflict, "scheduled or active lease", nil)
				e.must(t, http.StatusOK, http.MethodGet, path, "", nil)
			}
			// Leases are half-open: at its end the lease is over.
			e.clock.Set(l.End)
			e.must(t, http.StatusNoContent, http.MethodDelete, path, "", nil)
			e.must(t, http.StatusNotFound, http.MethodGet, path, "", nil)
			e.must(t, http.StatusNotFound, http.MethodGet, fmt.Sprintf("/api/v1/leases/%d", l.ID), "", nil)
		})
	}
}

// leaseFixture leases at testNow: n2 to t2 over [t0+24h, t0+48h).
func leaseFixture(t *testing.T) *apiEnv {
	e := newAPIEnv(t)
	e.seed(t)
	e.createLease(t, "n2", "t2", 24*time.Hour, 48*time.Hour)
	return e
}

func TestAPICreateLease(t *testing.T) {
	week := 7 * 24 * time.Hour
	tests := map[string]struct {
		body        string
		contentType string
		status      int
		errSub      string
		fields      []string
		start, end  time.Duration // from t0, for 201
		state       lease.State
	}{
		"start and end":         {body: `{"node":"n1","tenant":"t1","start":"` + at(time.Hour) + `","end":"` + at(25*time.Hour) + `"}`, status: 201, start: time.Hour, end: 25 * time.Hour, state: lease.Scheduled},
		"start and duration":    {body: `{"node":"n1","tenant":"t1","start":"` + at(time.Hour) + `","duration":"72h"}`, status: 201, start: time.Hour, end: 73 * time.Hour, state: lease.Scheduled},
		"duration from now":     {body: `{"node":"n1","tenant":"t1","duration":"90m"}`, status: 201, end: 90 * time.Minute, state: lease.Active},
		"defaults":              {body: `{"node":"n1","tenant":"t1"}`, status: 201, end: week, state: lease.Active},
		"default end":           {body: `{"node":"n1","tenant":"t1","start":"` + at(time.Hour) + `"}`, status: 201, start: time.Hour, end: time.Hour + week, state: lease.Scheduled},
		"started in the past":   {body: `{"node":"n1","tenant":"t1","start":"` + at(-time.Hour) + `","end":"` + at(time.Hour) + `"}`, status: 201, start: -time.Hour, end: time.Hour, state: lease.Active},
		"offset becomes UTC":    {body: `{"node":"n1","tenant":"t1","start":"2026-03-02T12:30:00+02:00","end":"2026-03-02T13:30:00+02:00"}`, status: 201, start: time.Hour, end: 2 * time.Hour, state: lease.Scheduled},
		"fractions truncated":   {body: `{"node":"n1","tenant":"t1","start":"2026-03-02T10:30:00.999Z","end":"2026-03-02T11:30:00.5Z"}`, status: 201, start: time.Hour, end: 2 * time.Hour, state: lease.Scheduled},
		"touching before":       {body: `{"node":"n2","tenant":"t1","start":"` + at(time.Hour) + `","end":"` + at(24*time.Hour) + `"}`, status: 201, start: time.Hour, end: 24 * time.Hour, state: lease.Scheduled},
		"touching after":        {body: `{"node":"n2","tenant":"t1","start":"` + at(48*time.Hour) + `","end":"` + at(50*time.Hour) + `"}`, status: 201, start: 48 * time.Hour, end: 50 * time.Hour, state: lease.Scheduled},
		"other node, same time": {body: `{"node":"n1","tenant":"t1","start":"` + at(30*time.Hour) + `","end":"` + at(31*time.Hour) + `"}`, status: 201, start: 30 * time.Hour, end: 31 * time.Hour, state: lease.Scheduled},

		"overlap":              {body: `{"node":"n2","tenant":"t1","start":"` + at(30*time.Hour) + `","end":"` + at(31*time.Hour) + `"}`, status: 409, errSub: "already leased to t2"},
		"end before start":     {body: `{"node":"n1","tenant":"t1","start":"` + at(2*time.Hour) + `","end":"` + at(time.Hour) + `"}`, status: 422, errSub: "not after start"},
		"end equals start":     {body: `{"node":"n1","tenant":"t1","start":"` + at(time.Hour) + `","end":"` + at(time.Hour) + `"}`, status: 422, errSub: "not after start"},
		"over max duration":    {body: `{"node":"n1","tenant":"t1","start":"` + at(time.Hour) + `","duration":"505h"}`, status: 422, errSub: "longer than the maximum"},
		"under min duration":   {body: `{"node":"n1","tenant":"t1","duration":"30s"}`, status: 422, errSub: "shorter than the minimum"},
		"entirely in the past": {body: `{"node":"n1","tenant":"t1","start":"` + at(-48*time.Hour) + `","end":"` + at(-24*time.Hour) + `"}`, status: 422, errSub: "not in the future"},
		"ends now":             {body: `{"node":"n1","tenant":"t1","start":"` + at(-time.Hour) + `","end":"` + at(0) + `"}`, status: 422, errSub: "not in the future"},
		"too far ahead":        {body: `{"node":"n1","tenant":"t1","start":"` + at(400*24*time.Hour) + `"}`, status: 422, errSub: "ahead"},
		"unknown node":         {body: `{"node":"ghost","tenant":"t1"}`, status: 422, errSub: `node "ghost"`},
		"unknown tenant":       {body: `{"node":"n1","tenant":"ghost"}`, status: 422, errSub: `tenant "ghost"`},
		"start not RFC 3339":   {body: `{"node":"n1","tenant":"t1","start":"tomorrow"}`, status: 400, errSub: "RFC 3339", fields: []string{"start"}},
		"end not RFC 3339":     {body: `{"node":"n1","tenant":"t1","end":"2026-03-05 09:00"}`, status: 400, errSub: "RFC 3339", fields: []string{"end"}},
		"end and duration":     {body: `{"node":"n1","tenant":"t1","end":"` + at(time.Hour) + `","duration":"1h"}`, status: 400, errSub: "not both", fields: []string{"duration"}},
		"negative duration":    {body: `{"node":"n1","tenant":"t1","duration":"-1h"}`, status: 400, errSub: "positive duration", fields: []string{"duration"}},
		"duration in days":     {body: `{"node":"n1","tenant":"t1","duration":"7d"}`, status: 400, errSub: "positive duration", fields: []string{"duration"}},
		"bad node name":        {body: `{"node":"N1","tenant":"t1"}`, status: 400, errSub: "DNS label", fields: []string{"node"}},
		"nothing named":        {body: `{}`, status: 400, errSub: "required", fields: []string{"node", "tenant"}},
		"unknown field":        {body: `{"node":"n1","tenant":"t1","owner":"x"}`, status: 400, errSub: `unknown field "owner"`},
		"malformed JSON":       {body: `{"node":"n1",}`, status: 400, errSub: "malformed JSON"},
		"text/plain":           {body: `{"node":"n1","tenant":"t1"}`, contentType: "text/plain", status: 415, errSub: "application/json"},
		"body over 1 MiB":      {body: `{"node":"n1","tenant":"` + strings.Repeat("t", httpx.DefaultBodyLimit) + `"}`, status: 413, errSub: "larger than"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := leaseFixture(t)
			before := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases", "", nil).body
			r := apiReq(http.MethodPost, "/api/v1/leases", tc.body)
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			rep := e.serve(r)
			if tc.status != http.StatusCreated {
				checkError(t, rep, tc.status, tc.errSub, tc.fields)
				if after := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases", "", nil).body; !bytes.Equal(before, after) {
					t.Errorf("a refused request changed the leases:\n%s", after)
				}
				return
			}
			if rep.status != http.StatusCreated {
				t.Fatalf("got %d, want 201: %s", rep.status, rep.body)
			}
			var got, stored wire.Lease
			rep.decode(t, &got)
			if loc := rep.header.Get("Location"); loc != fmt.Sprintf("/api/v1/leases/%d", got.ID) {
				t.Errorf("Location %q for lease %d", loc, got.ID)
			}
			e.must(t, http.StatusOK, http.MethodGet, fmt.Sprintf("/api/v1/leases/%d", got.ID), "", &stored)
			for _, l := range []wire.Lease{got, stored} {
				if !l.Start.Equal(t0().Add(tc.start)) || !l.End.Equal(t0().Add(tc.end)) {
					t.Errorf("lease [%s, %s), want [%s, %s)", l.Start, l.End, t0().Add(tc.start), t0().Add(tc.end))
				}
				if l.State != tc.state || l.Cancelled || !l.CreatedAt.Equal(testNow()) {
					t.Errorf("state %q cancelled %t created %s, want %q at %s", l.State, l.Cancelled, l.CreatedAt, tc.state, testNow())
				}
			}
		})
	}
}

func TestAPILeaseConflictNamesTheExistingLease(t *testing.T) {
	e := leaseFixture(t)
	var existing wire.Lease
	e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases/1", "", &existing)
	rep := e.call(http.MethodPost, "/api/v1/leases", `{"node":"n2","tenant":"t1","start":"`+at(47*time.Hour)+`","duration":"2h"}`)
	ce := checkError(t, rep, http.StatusConflict, "lease 1", nil)
	if ce.Conflict == nil {
		t.Fatalf("no conflict in %s", rep.body)
	}
	if c := ce.Conflict; c.ID != existing.ID || c.Node != "n2" || c.Tenant != "t2" || c.State != lease.Scheduled ||
		!c.Start.Equal(existing.Start) || !c.End.Equal(existing.End) {
		t.Errorf("conflict %+v, want %+v", *ce.Conflict, existing)
	}
	var raw struct {
		Conflict map[string]any `json:"conflict"`
	}
	rep.decode(t, &raw)
	for _, k := range []string{"id", "node", "tenant", "start", "end", "state"} {
		if _, ok := raw.Conflict[k]; !ok {
			t.Errorf("conflict lacks %q: %s", k, rep.body)
		}
	}
	// Once the existing lease is withdrawn the slot is free.
	e.must(t, http.StatusOK, http.MethodPost, "/api/v1/leases/1/cancel", "", nil)
	e.must(t, http.StatusCreated, http.MethodPost, "/api/v1/leases", `{"node":"n2","tenant":"t1","start":"`+at(47*time.Hour)+`","duration":"2h"}`, nil)
}

func TestAPIListLeases(t *testing.T) {
	e := newAPIEnv(t)
	e.seed(t)
	// Created at t0; listed at t0+2h, when 1 has ended, 2 is active, 3 is
	// scheduled and 4 was cancelled.
	e.createLease(t, "n1", "t1", 0, time.Hour)
	e.createLease(t, "n1", "t2", time.Hour, 3*time.Hour)
	e.createLease(t, "n2", "t1", 5*time.Hour, 6*time.Hour)
	e.createLease(t, "n2", "t2", 7*time.Hour, 8*time.Hour)
	e.must(t, http.StatusOK, http.MethodPost, "/api/v1/leases/4/cancel", "", nil)
	e.clock.Set(t0().Add(2 * time.Hour))
	states := map[int64]lease.State{1: lease.Ended, 2: lease.Active, 3: lease.Scheduled, 4: lease.Cancelled}

	tests := map[string]struct {
		query  string
		want   []int64
		fields []string // for a 400
	}{
		"everything":        {query: "", want: []int64{1, 2, 3, 4}},
		"node":              {query: "node=n1", want: []int64{1, 2}},
		"tenant":            {query: "tenant=t1", want: []int64{1, 3}},
		"ended":             {query: "state=ended", want: []int64{1}},
		"active":            {query: "state=active", want: []int64{2}},
		"scheduled":         {query: "state=scheduled", want: []int64{3}},
		"cancelled":         {query: "state=cancelled", want: []int64{4}},
		"from":              {query: "from=" + at(3*time.Hour), want: []int64{3, 4}},
		"to":                {query: "to=" + at(time.Hour), want: []int64{1}},
		"from and to":       {query: "from=" + at(30*time.Minute) + "&to=" + at(5*time.Hour+30*time.Minute), want: []int64{1, 2, 3}},
		"node and state":    {query: "node=n2&state=scheduled", want: []int64{3}},
		"limit":             {query: "limit=2", want: []int64{1, 2}},
		"unknown node":      {query: "node=ghost", want: []int64{}},
		"bad node":          {query: "node=Bad_Name", fields: []string{"node"}},
		"bad tenant":        {query: "tenant=-t", fields: []string{"tenant"}},
		"bad state":         {query: "state=bogus", fields: []string{"state"}},
		"bad from":          {query: "from=yesterday", fields: []string{"from"}},
		"bad to":            {query: "to=2026-03-02", fields: []string{"to"}},
		"zero limit":        {query: "limit=0", fields: []string{"limit"}},
		"limit too large":   {query: "limit=10001", fields: []string{"limit"}},
		"limit not integer": {query: "limit=ten", fields: []string{"limit"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rep := e.call(http.MethodGet, "/api/v1/leases?"+tc.query, "")
			if tc.fields != nil {
				checkError(t, rep, http.StatusBadRequest, tc.fields[0], tc.fields)
				return
			}
			if rep.status != http.StatusOK {
				t.Fatalf("got %d: %s", rep.status, rep.body)
			}
			var ls []wire.Lease
			rep.decode(t, &ls)
			ids := []int64{}
			for _, l := range ls {
				ids = append(ids, l.ID)
				if l.State != states[l.ID] {
					t.Errorf("lease %d is %q, want %q", l.ID, l.State, states[l.ID])
				}
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("leases %v, want %v", ids, tc.want)
			}
		})
	}
}

func TestAPIGetLease(t *testing.T) {
	tests := map[string]struct {
		path   string
		now    time.Duration // clock from t0
		status int
		state  lease.State
		errSub string
	}{
		"scheduled":    {path: "/api/v1/leases/1", status: 200, state: lease.Scheduled},
		"active":       {path: "/api/v1/leases/1", now: time.Hour, status: 200, state: lease.Active},
		"ended at end": {path: "/api/v1/leases/1", now: 2 * time.Hour, status: 200, state: lease.Ended},
		"missing":      {path: "/api/v1/leases/999", status: 404, errSub: "lease 999"},
		"not a number": {path: "/api/v1/leases/abc", status: 400, errSub: `"abc" is not a positive integer`},
		"zero":         {path: "/api/v1/leases/0", status: 400, errSub: "positive integer"},
		"negative":     {path: "/api/v1/leases/-1", status: 400, errSub: "positive integer"},
		"overflow":     {path: "/api/v1/leases/99999999999999999999", status: 400, errSub: "positive integer"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newAPIEnv(t)
			e.seed(t)
			e.createLease(t, "n1", "t1", time.Hour, 2*time.Hour)
			e.clock.Set(t0().Add(tc.now))
			rep := e.call(http.MethodGet, tc.path, "")
			if tc.status != http.StatusOK {
				checkError(t, rep, tc.status, tc.errSub, nil)
				return
			}
			var l wire.Lease
			rep.decode(t, &l)
			if rep.status != http.StatusOK || l.ID != 1 || l.State != tc.state {
				t.Errorf("got %d %+v, want lease 1 %s", rep.status, l, tc.state)
			}
		})
	}
}

// lifecycleFixture leases, at testNow, n1 to t1 over [t0-1h, t0+1h)
// (lease 1, active) and [t0+2h, t0+4h) (lease 2, scheduled), then n1 to t2
// over [t0+4h, t0+6h) (lease 3, scheduled, touching lease 2).
func lifecycleFixture(t *testing.T) *apiEnv {
	e := newAPIEnv(t)
	e.seed(t)
	e.createLease(t, "n1", "t1", -time.Hour, time.Hour)
	e.createLease(t, "n1", "t1", 2*time.Hour, 4*time.Hour)
	e.createLease(t, "n1", "t2", 4*time.Hour, 6*time.Hour)
	return e
}

func TestAPICancelLease(t *testing.T) {
	tests := map[string]struct {
		first      string // a call made before the one under test
		path       string
		status     int
		errSub     string
		state      lease.State
		start, end time.Duration
	}{
		"scheduled is withdrawn":          {path: "/api/v1/leases/2/cancel", status: 200, state: lease.Cancelled, start: 2 * time.Hour, end: 4 * time.Hour},
		"active ends now":                 {path: "/api/v1/leases/1/cancel", status: 200, state: lease.Ended, start: -time.Hour, end: 0},
		"ended cannot be":                 {first: "/api/v1/leases/1/cancel", path: "/api/v1/leases/1/cancel", status: 409, errSub: "is ended"},
		"cancelled cannot be":             {first: "/api/v1/leases/2/cancel", path: "/api/v1/leases/2/cancel", status: 409, errSub: "is cancelled"},
		"missing":                         {path: "/api/v1/leases/999/cancel", status: 404, errSub: "lease 999"},
		"bad id":                          {path: "/api/v1/leases/abc/cancel", status: 400, errSub: "positive integer"},
		"another after one was withdrawn": {first: "/api/v1/leases/2/cancel", path: "/api/v1/leases/3/cancel", status: 200, state: lease.Cancelled, start: 4 * time.Hour, end: 6 * time.Hour},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := lifecycleFixture(t)
			if tc.first != "" {
				e.must(t, http.StatusOK, http.MethodPost, tc.first, "", nil)
			}
			before := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases", "", nil).body
			rep := e.call(http.MethodPost, tc.path, "")
			if tc.status != http.StatusOK {
				checkError(t, rep, tc.status, tc.errSub, nil)
				if after := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases", "", nil).body; !bytes.Equal(before, after) {
					t.Errorf("a refused cancel changed the leases:\n%s", after)
				}
				return
			}
			var got, stored wire.Lease
			rep.decode(t, &got)
			e.must(t, http.StatusOK, http.MethodGet, strings.TrimSuffix(tc.path, "/cancel"), "", &stored)
			for _, l := range []wire.Lease{got, stored} {
				if rep.status != http.StatusOK || l.State != tc.state || l.Cancelled != (tc.state == lease.Cancelled) {
					t.Errorf("got %d %+v, want state %s", rep.status, l, tc.state)
				}
				if !l.Start.Equal(t0().Add(tc.start)) || !l.End.Equal(t0().Add(tc.end)) {
					t.Errorf("lease [%s, %s), want [%s, %s)", l.Start, l.End, t0().Add(tc.start), t0().Add(tc.end))
				}
			}
		})
	}
}

func TestAPIExtendLease(t *testing.T) {
	tests := map[string]struct {
		first       string // a cancel made before the extension
		id          string
		body        string
		contentType string
		status      int
		errSub      string
		fields      []string
		end         time.Duration // the new end, for 200
		conflict    int64
	}{
		"by":                    {id: "3", body: `{"by":"24h"}`, status: 200, end: 30 * time.Hour},
		"to an end":             {id: "3", body: `{"end":"` + at(10*time.Hour) + `"}`, status: 200, end: 10 * time.Hour},
		"active up to the next": {id: "1", body: `{"end":"` + at(2*time.Hour) + `"}`, status: 200, end: 2 * time.Hour},
		"into the next lease":   {id: "2", body: `{"by":"1h"}`, status: 409, errSub: "lease 3", conflict: 3},
		"active into the next":  {id: "1", body: `{"end":"` + at(3*time.Hour) + `"}`, status: 409, errSub: "lease 2", conflict: 2},
		"into a cancelled slot": {first: "3", id: "2", body: `{"by":"1h"}`, status: 200, end: 5 * time.Hour},
		"neither":               {id: "3", body: `{}`, status: 400, errSub: "exactly one", fields: []string{"end"}},
		"both":                  {id: "3", body: `{"by":"1h","end":"` + at(10*time.Hour) + `"}`, status: 400, errSub: "exactly one", fields: []string{"end"}},
		"bad by":                {id: "3", body: `{"by":"-2h"}`, status: 400, errSub: "positive duration", fields: []string{"by"}},
		"bad end":               {id: "3", body: `{"end":"soon"}`, status: 400, errSub: "RFC 3339", fields: []string{"end"}},
		"not later":             {id: "3", body: `{"end":"` + at(5*time.Hour) + `"}`, status: 422, errSub: "not after the current end"},
		"over max duration":     {id: "3", body: `{"by":"504h"}`, status: 422, errSub: "longer than the maximum"},
		"ended":                 {first: "1", id: "1", body: `{"by":"1h"}`, status: 409, errSub: "is ended"},
		"cancelled":             {first: "2", id: "2", body: `{"by":"1h"}`, status: 409, errSub: "is cancelled"},
		"missing, by":           {id: "999", body: `{"by":"1h"}`, status: 404, errSub: "lease 999"},
		"missing, end":          {id: "999", body: `{"end":"` + at(10*time.Hour) + `"}`, status: 404, errSub: "lease 999"},
		"bad id":                {id: "abc", body: `{"by":"1h"}`, status: 400, errSub: "positive integer"},
		"unknown field":         {id: "3", body: `{"by":"1h","reason":"x"}`, status: 400, errSub: `unknown field "reason"`},
		"text/plain":            {id: "3", body: `{"by":"1h"}`, contentType: "text/plain", status: 415, errSub: "application/json"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := lifecycleFixture(t)
			if tc.first != "" {
				e.must(t, http.StatusOK, http.MethodPost, "/api/v1/leases/"+tc.first+"/cancel", "", nil)
			}
			before := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases", "", nil).body
			r := apiReq(http.MethodPost, "/api/v1/leases/"+tc.id+"/extend", tc.body)
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			rep := e.serve(r)
			if tc.status != http.StatusOK {
				ae := checkError(t, rep, tc.status, tc.errSub, tc.fields)
				if tc.conflict != 0 && (ae.Conflict == nil || ae.Conflict.ID != tc.conflict) {
					t.Errorf("conflict %+v, want lease %d", ae.Conflict, tc.conflict)
				}
				if after := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases", "", nil).body; !bytes.Equal(before, after) {
					t.Errorf("a refused extension changed the leases:\n%s", after)
				}
				return
			}
			var got, stored wire.Lease
			rep.decode(t, &got)
			e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases/"+tc.id, "", &stored)
			for _, l := range []wire.Lease{got, stored} {
				if rep.status != http.StatusOK || !l.End.Equal(t0().Add(tc.end)) {
					t.Errorf("got %d, end %s, want %s", rep.status, l.End, t0().Add(tc.end))
				}
				if want := l.StateAt(testNow()); l.State != want {
					t.Errorf("state %q, want %q", l.State, want)
				}
			}
		})
	}
}

func TestAPIAudit(t *testing.T) {
	e := newAPIEnv(t)
	steps := []struct {
		method, path, body string
		action, target     string
		result             string // prefix
	}{
		{http.MethodPost, "/api/v1/tenants", `{"name":"t1"}`, "tenant.create", "tenant/t1", "ok"},
		{http.MethodPost, "/api/v1/tenants", `{"name":"t1"}`, "tenant.create", "tenant/t1", "refused (409)"},
		{http.MethodPost, "/api/v1/nodes", `{"name":"n1","macs":["52:54:00:00:00:01"]}`, "node.create", "node/n1", "ok"},
		{http.MethodPost, "/api/v1/nodes", `{"name":"N_1"}`, "node.create", "node/(invalid name)", "refused (400)"},
		{http.MethodPost, "/api/v1/leases", `{"node":"n1","tenant":"t1","start":"` + at(time.Hour) + `","end":"` + at(2*time.Hour) + `"}`, "lease.create", "node/n1", "ok"},
		{http.MethodPost, "/api/v1/leases", `{"node":"n1","tenant":"t1","duration":"2h"}`, "lease.create", "node/n1", "refused (409)"},
		{http.MethodPost, "/api/v1/leases", `{"node":"n1","tenant":"ghost"}`, "lease.create", "node/n1", "refused (422)"},
		{http.MethodPost, "/api/v1/leases/1/extend", `{"by":"1h"}`, "lease.extend", "lease/1", "ok"},
		{http.MethodPost, "/api/v1/leases/1/cancel", ``, "lease.cancel", "lease/1", "ok"},
		{http.MethodPost, "/api/v1/leases/1/cancel", ``, "lease.cancel", "lease/1", "refused (409)"},
		{http.MethodDelete, "/api/v1/nodes/ghost", ``, "node.delete", "node/ghost", "refused (404)"},
		{http.MethodDelete, "/api/v1/tenants/t1", ``, "tenant.delete", "tenant/t1", "ok"},
	}
	for i, s := range steps {
		e.clock.Set(testNow().Add(time.Duration(i) * time.Minute))
		e.call(s.method, s.path, s.body)
		e.call(http.MethodGet, "/api/v1/leases", "") // reads are not audited
	}

	var all []audit.Entry
	e.must(t, http.StatusOK, http.MethodGet, "/api/v1/audit", "", &all)
	if len(all) != len(steps) {
		t.Fatalf("%d audit entries, want %d: %+v", len(all), len(steps), all)
	}
	for i, got := range all {
		n := len(steps) - 1 - i // newest first
		s := steps[n]
		if got.Actor != "admin" || got.Action != s.action || got.Target != s.target || !strings.HasPrefix(got.Result, s.result) {
			t.Errorf("entry %d: %+v, want admin %s %s %s…", i, got, s.action, s.target, s.result)
		}
		if want := testNow().Add(time.Duration(n) * time.Minute); !got.At.Equal(want) {
			t.Errorf("entry %d at %s, want %s", i, got.At, want)
		}
		if i > 0 && got.ID >= all[i-1].ID {
			t.Errorf("entry %d has id %d after id %d: not newest first", i, got.ID, all[i-1].ID)
		}
	}
	if want := "tenant=t1 start=" + at(time.Hour) + " end=" + at(2*time.Hour); all[len(all)-5].Detail != want {
		t.Errorf("lease.create detail %q, want %q", all[len(all)-5].Detail, want)
	}

	pages := map[string]struct {
		query string
		want  []audit.Entry
	}{
		"limit":            {query: "limit=3", want: all[:3]},
		"before":           {query: fmt.Sprintf("before=%d&limit=3", all[2].ID), want: all[3:6]},
		"last page":        {query: fmt.Sprintf("before=%d", all[9].ID), want: all[10:]},
		"before the first": {query: fmt.Sprintf("before=%d", all[len(all)-1].ID), want: []audit.Entry{}},
	}
	for name, tc := range pages {
		t.Run(name, func(t *testing.T) {
			var got []audit.Entry
			e.must(t, http.StatusOK, http.MethodGet, "/api/v1/audit?"+tc.query, "", &got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for query, field := range map[string]string{
		"limit=0": "limit", "limit=1001": "limit", "limit=ten": "limit", "before=0": "before", "before=x": "before",
	} {
		t.Run(query, func(t *testing.T) {
			checkError(t, e.call(http.MethodGet, "/api/v1/audit?"+query, ""), http.StatusBadRequest, field, []string{field})
		})
	}
}

// TestAPIConcurrentOverlappingLeases races many clients for one node over
// real HTTP: the store must let exactly one of them through.
func TestAPIConcurrentOverlappingLeases(t *testing.T) {
	const clients = 50
	e := newAPIEnv(t)
	e.seed(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()

	start := make(chan struct{})
	type outcome struct {
		status int
		body   apiError
		err    error
	}
	results := make(chan outcome, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			body := fmt.Sprintf(`{"node":"n1","tenant":"t1","start":%q,"end":%q}`, at(time.Hour+time.Duration(i)*time.Minute), at(5*time.Hour))
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/leases", strings.NewReader(body))
			if err != nil {
				results <- outcome{err: err}
				return
			}
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/json")
			<-start
			resp, err := srv.Client().Do(req)
			if err != nil {
				results <- outcome{err: err}
				return
			}
			defer resp.Body.Close()
			var o outcome
			o.status = resp.StatusCode
			b, err := io.ReadAll(resp.Body)
			if err == nil {
				err = json.Unmarshal(b, &o.body)
			}
			o.err = err
			results <- o
		})
	}
	close(start)
	wg.Wait()
	close(results)

	counts := map[int]int{}
	for o := range results {
		if o.err != nil {
			t.Fatal(o.err)
		}
		counts[o.status]++
		if o.status == http.StatusConflict && (o.body.Conflict == nil || o.body.Conflict.Node != "n1") {
			t.Errorf("409 without the conflicting lease: %+v", o.body)
		}
	}
	if counts[http.StatusCreated] != 1 || counts[http.StatusConflict] != clients-1 {
		t.Fatalf("statuses %v, want one 201 and %d 409s", counts, clients-1)
	}
	var ls []wire.Lease
	e.must(t, http.StatusOK, http.MethodGet, "/api/v1/leases?node=n1", "", &ls)
	if len(ls) != 1 {
		t.Fatalf("%d leases of n1 stored, want 1: %+v", len(ls), ls)
	}
}

func TestAPIMetrics(t *testing.T) {
	e := newAPIEnv(t)
	e.seed(t)                                                                              // 2 POST nodes, 2 POST tenants, all 201
	e.call(http.MethodGet, "/api/v1/nodes", "")                                            // 200
	e.call(http.MethodGet, "/api/v1/nodes", "")                                            // 200
	e.call(http.MethodGet, "/api/v1/nodes/n1", "")                                         // 200
	e.call(http.MethodGet, "/api/v1/nodes/ghost", "")                                      // 404
	e.call(http.MethodPost, "/api/v1/nodes", `{"name":"n1","macs":["52:54:00:00:00:01"]}`) // 409

	rep := e.must(t, http.StatusOK, http.MethodGet, "/metrics", "", nil)
	if ct := rep.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want Prometheus text", ct)
	}
	text := string(rep.body)
	for _, line := range []string{
		`malleable_http_requests_total{code="200",method="GET",route="/api/v1/nodes"} 2`,
		`malleable_http_requests_total{code="201",method="POST",route="/api/v1/nodes"} 2`,
		`malleable_http_requests_total{code="409",method="POST",route="/api/v1/nodes"} 1`,
		`malleable_http_requests_total{code="201",method="POST",route="/api/v1/tenants"} 2`,
		`malleable_http_requests_total{code="200",method="GET",route="/api/v1/nodes/{name}"} 1`,
		`malleable_http_requests_total{code="404",method="GET",route="/api/v1/nodes/{name}"} 1`,
		`malleable_http_request_duration_seconds_count{route="/api/v1/nodes"} 5`,
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
	// Route templates, not paths, keep the label values bounded.
	if strings.Contains(text, `route="/api/v1/nodes/ghost"`) || strings.Contains(text, `route="/api/v1/nodes/n1"`) {
		t.Errorf("a raw path became a label value:\n%s", text)
	}
}
