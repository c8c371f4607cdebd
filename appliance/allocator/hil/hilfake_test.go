package hil

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeHIL replays HIL's REST API as reference/m2-hil-esi.md §2 and §8
// describe it (CCI-MOC/hil with OBMd): the /v0 prefix, JSON bodies
// validated before authentication, errors as {"type", "msg"} served as
// text/html, HTTP Basic against a user table (unknown user 404, wrong
// password 401) or null auth, project/node/NIC/network state, asynchronous
// networking actions, OBM enable/disable issuing and revoking tokens at a
// second server acting as OBMd, and 307 redirects for power calls. Routing
// splits the decoded path on "/", as Werkzeug does, so a client that let a
// slash into a label would reach another route.
type fakeHIL struct {
	srv    *httptest.Server
	obmd   *fakeOBMd
	routes []fakeRoute

	mu       sync.Mutex
	users    map[string]fakeUser // nil: HIL's null auth, everyone is admin
	projects map[string]bool
	networks map[string]bool
	nodes    map[string]*fakeNode
	actions  map[string]*fakeAction
	calls    []fakeCall
	inject   map[string]fakeResp // "METHOD /v0/decoded/path" → canned answer
	// before runs for every request, before anything else, without mu.
	before func(r *http.Request)
	// Networking actions stay PENDING (no network daemon) or end in ERROR.
	stuckActions, failActions bool
}

type fakeUser struct {
	password string
	admin    bool
	projects []string
}

type fakeNode struct {
	label, project string // project "" is free
	obmdID         string // the node's id at OBMd, unlike its HIL label
	token          string // HIL's copy of the OBMd token; "" is OBM disabled
	nics           []*fakeNIC
}

type fakeNIC struct {
	label, mac, port string
	networks         map[string]string // channel → network
	pending          string            // id of a queued networking action
}

type fakeAction struct {
	id, status, node, nic, network, channel string
	polls                                   int
}

type fakeCall struct {
	Method, Path, Body string
	ContentLength      int64
}

type fakeResp struct {
	status      int
	body        string
	contentType string
	location    string
}

// fakeArgs is a request's validated arguments: path parameters and body.
type fakeArgs map[string]any

func (a fakeArgs) str(k string) string { s, _ := a[k].(string); return s }

// fakeSchema maps argument names to "string", "bool" or "bool?" (optional).
type fakeSchema map[string]string

type fakeRoute struct {
	method  string
	pattern []string // literal segments and {param}s
	schema  fakeSchema
	handle  func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp
}

// fakeWho is the authenticated caller.
type fakeWho struct {
	admin    bool
	projects []string
}

func newFakeHIL(t *testing.T) *fakeHIL {
	t.Helper()
	f := &fakeHIL{
		obmd:     newFakeOBMd(t),
		projects: map[string]bool{},
		networks: map[string]bool{},
		nodes:    map[string]*fakeNode{},
		actions:  map[string]*fakeAction{},
		inject:   map[string]fakeResp{},
		routes:   hilRoutes(),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// addUser switches the fake to database auth and adds a user.
func (f *fakeHIL) addUser(name, password string, admin bool, projects ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.users == nil {
		f.users = map[string]fakeUser{}
	}
	f.users[name] = fakeUser{password: password, admin: admin, projects: projects}
}

// addNode registers a node with HIL and OBMd, with NICs eth0, eth1, ...
func (f *fakeHIL) addNode(label string, nics int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := &fakeNode{label: label, obmdID: fmt.Sprintf("obmd-%d", len(f.nodes)+1)}
	for i := range nics {
		n.nics = append(n.nics, &fakeNIC{
			label: fmt.Sprintf("eth%d", i), mac: fmt.Sprintf("52:54:00:00:%02x:%02x", len(f.nodes)+1, i),
			port: fmt.Sprintf("gi1/0/%d", i+1), networks: map[string]string{},
		})
	}
	f.nodes[label] = n
	f.obmd.addNode(n.obmdID)
}

// setProject puts a node in a project (creating it) or frees it, as if an
// earlier connect_node had run.
func (f *fakeHIL) setProject(node, project string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if project != "" {
		f.projects[project] = true
	}
	f.nodes[node].project = project
}

// attach attaches a network to a NIC, as if connect_network had run.
func (f *fakeHIL) attach(node, nic, network string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.networks[network] = true
	for _, c := range f.nodes[node].nics {
		if c.label == nic {
			c.networks[fmt.Sprintf("vlan/%d", 100+len(c.networks))] = network
		}
	}
}

// fakeNodeState is a node's state as HIL holds it.
type fakeNodeState struct {
	Project    string
	OBMEnabled bool
	Token      string
	Networks   []string
	Pending    bool
}

func (f *fakeHIL) state(node string) fakeNodeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[node]
	s := fakeNodeState{Project: n.project, OBMEnabled: n.token != "", Token: n.token}
	for _, c := range n.nics {
		for _, net := range c.networks {
			s.Networks = append(s.Networks, c.label+":"+net)
		}
		s.Pending = s.Pending || c.pending != ""
	}
	slices.Sort(s.Networks)
	return s
}

// callLog lists "METHOD /path" for every request HIL received.
func (f *fakeHIL) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		out = append(out, c.Method+" "+c.Path)
	}
	return out
}

func (f *fakeHIL) allCalls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// configure changes the fake under its lock.
func (f *fakeHIL) configure(fn func(f *fakeHIL)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeHIL) setInject(key string, r fakeResp) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inject[key] = r
}

func hilError(status int, typ, msg string) fakeResp {
	m, _ := json.Marshal(msg)
	return fakeResp{status: status, body: fmt.Sprintf(`{"type": %q, "msg": %s}`, typ, m)}
}

func hilJSON(status int, v any) fakeResp {
	b, _ := json.Marshal(v)
	return fakeResp{status: status, body: string(b)}
}

func htmlPage(status int) fakeResp {
	return fakeResp{status: status, body: fmt.Sprintf("<!doctype html>\n<title>%d %s</title>\n<h1>%s</h1>", status, http.StatusText(status), http.StatusText(status))}
}

func (f *fakeHIL) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls = append(f.calls, fakeCall{Method: r.Method, Path: r.URL.Path, Body: string(body), ContentLength: r.ContentLength})
	before := f.before
	f.mu.Unlock()
	if before != nil {
		before(r)
	}
	f.mu.Lock()
	resp := f.answer(r, body)
	f.mu.Unlock()
	ct := resp.contentType
	if ct == "" {
		ct = "text/html; charset=utf-8" // HIL labels even its JSON this way
	}
	w.Header().Set("Content-Type", ct)
	if resp.location != "" {
		w.Header().Set("Location", resp.location)
	}
	w.WriteHeader(resp.status)
	io.WriteString(w, resp.body)
}

func (f *fakeHIL) answer(r *http.Request, body []byte) fakeResp {
	if canned, ok := f.inject[r.Method+" "+r.URL.Path]; ok {
		return canned
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v0/")
	if !ok {
		return htmlPage(http.StatusNotFound)
	}
	route, params, status := matchRoute(f.routes, r.Method, strings.Split(rest, "/"))
	if route == nil {
		return htmlPage(status)
	}
	args, bad := validate(r, body, params, route.schema)
	if bad != nil {
		return *bad
	}
	who, bad := f.authenticate(r)
	if bad != nil {
		return *bad
	}
	return route.handle(f, who, args)
}

func matchRoute(routes []fakeRoute, method string, segs []string) (*fakeRoute, map[string]string, int) {
	status := http.StatusNotFound
	for i := range routes {
		rt := &routes[i]
		params, ok := matchPattern(rt.pattern, segs)
		if !ok {
			continue
		}
		if rt.method != method {
			status = http.StatusMethodNotAllowed
			continue
		}
		return rt, params, 0
	}
	return nil, nil, status
}

func matchPattern(pattern, segs []string) (map[string]string, bool) {
	if len(pattern) != len(segs) {
		return nil, false
	}
	params := map[string]string{}
	for i, p := range pattern {
		if name, ok := strings.CutPrefix(p, "{"); ok {
			if segs[i] == "" {
				return nil, false
			}
			params[strings.TrimSuffix(name, "}")] = segs[i]
		} else if p != segs[i] {
			return nil, false
		}
	}
	return params, true
}

// validate is hil/rest.py's _do_validation: a GET with a body is refused,
// a non-GET body is a JSON object, path parameters must not repeat in it,
// and the schema must match exactly.
func validate(r *http.Request, body []byte, params map[string]string, schema fakeSchema) (fakeArgs, *fakeResp) {
	invalid := hilError(http.StatusBadRequest, "ValidationError", "Request arguments are not valid for this request")
	args := fakeArgs{}
	if r.Method == http.MethodGet {
		if len(body) > 0 {
			e := hilError(http.StatusBadRequest, "ValidationError", "GET request made with a non-empty request body")
			return nil, &e
		}
	} else {
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data" {
			body = nil // Flask parses it as a form; request.data is empty
		}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &args); err != nil {
				e := hilError(http.StatusBadRequest, "ValidationError", "The request body is not valid JSON")
				return nil, &e
			}
		}
	}
	for k, v := range params {
		if _, dup := args[k]; dup {
			return nil, &invalid
		}
		args[k] = v
	}
	for k, v := range args {
		kind, ok := schema[k]
		if !ok {
			_, isParam := params[k]
			if !isParam {
				return nil, &invalid
			}
			continue
		}
		switch strings.TrimSuffix(kind, "?") {
		case "string":
			_, ok = v.(string)
		case "bool":
			_, ok = v.(bool)
		}
		if !ok {
			return nil, &invalid
		}
	}
	for k, kind := range schema {
		if _, ok := args[k]; !ok && !strings.HasSuffix(kind, "?") {
			return nil, &invalid
		}
	}
	return args, nil
}

// authenticate is the database auth backend (or null auth when no user
// was added), run after validation as in hil/rest.py.
func (f *fakeHIL) authenticate(r *http.Request) (fakeWho, *fakeResp) {
	if f.users == nil {
		return fakeWho{admin: true}, nil
	}
	failed := hilError(http.StatusUnauthorized, "AuthorizationError", "Authentication failed. Authentication is required to use this service.")
	name, password, ok := r.BasicAuth()
	if !ok {
		return fakeWho{}, &failed
	}
	u, known := f.users[name]
	if !known {
		e := hilError(http.StatusNotFound, "NotFoundError", fmt.Sprintf("User %s does not exist.", name))
		return fakeWho{}, &e
	}
	if u.password != password {
		return fakeWho{}, &failed
	}
	return fakeWho{admin: u.admin, projects: u.projects}, nil
}

func (w fakeWho) requireAdmin() *fakeResp {
	if w.admin {
		return nil
	}
	e := hilError(http.StatusUnauthorized, "AuthorizationError", "This operation is administrator-only.")
	return &e
}

// requireProjectAccess: project "" (a free node's None) is admin-only.
func (w fakeWho) requireProjectAccess(project string) *fakeResp {
	if w.admin || (project != "" && slices.Contains(w.projects, project)) {
		return nil
	}
	e := hilError(http.StatusUnauthorized, "AuthorizationError", "You do not have access to the required project.")
	return &e
}

var ok200 = fakeResp{status: http.StatusOK}

func (f *fakeHIL) mustProject(name string) *fakeResp {
	if f.projects[name] {
		return nil
	}
	e := hilError(http.StatusNotFound, "NotFoundError", fmt.Sprintf("Project %s does not exist.", name))
	return &e
}

func (f *fakeHIL) mustNode(name string) (*fakeNode, *fakeResp) {
	if n, ok := f.nodes[name]; ok {
		return n, nil
	}
	e := hilError(http.StatusNotFound, "NotFoundError", fmt.Sprintf("Node %s does not exist.", name))
	return nil, &e
}

// first returns the first failure among checks run in order.
func first(checks ...func() *fakeResp) *fakeResp {
	for _, c := range checks {
		if e := c(); e != nil {
			return e
		}
	}
	return nil
}

// hilRoutes are the calls the client makes, with HIL's checks in HIL's order.
func hilRoutes() []fakeRoute {
	return []fakeRoute{
		{http.MethodPut, []string{"project", "{project}"}, fakeSchema{"project": "string"},
			func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
				p := a.str("project")
				if e := who.requireAdmin(); e != nil {
					return *e
				}
				if f.projects[p] {
					return hilError(http.StatusConflict, "DuplicateError", fmt.Sprintf("Project %s already exists.", p))
				}
				f.projects[p] = true
				return ok200
			}},
		{http.MethodPost, []string{"project", "{project}", "connect_node"}, fakeSchema{"project": "string", "node": "string"},
			func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
				p := a.str("project")
				var n *fakeNode
				if e := first(
					func() *fakeResp { return f.mustProject(p) },
					func() *fakeResp { return who.requireProjectAccess(p) },
					func() (e *fakeResp) { n, e = f.mustNode(a.str("node")); return e },
				); e != nil {
					return *e
				}
				if n.project != "" {
					return hilError(http.StatusConflict, "BlockedError", "Node is already owned by a project.")
				}
				n.project = p
				return ok200
			}},
		{http.MethodPost, []string{"project", "{project}", "detach_node"}, fakeSchema{"project": "string", "node": "string"},
			func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
				p := a.str("project")
				var n *fakeNode
				if e := first(
					func() *fakeResp { return f.mustProject(p) },
					func() *fakeResp { return who.requireProjectAccess(p) },
					func() (e *fakeResp) { n, e = f.mustNode(a.str("node")); return e },
				); e != nil {
					return *e
				}
				if n.project != p {
					return hilError(http.StatusNotFound, "NotFoundError", "Node not in project")
				}
				for _, c := range n.nics {
					if len(c.networks) > 0 {
						return hilError(http.StatusConflict, "BlockedError", "Node attached to a network")
					}
				}
				for _, c := range n.nics {
					if c.pending != "" {
						return hilError(http.StatusConflict, "BlockedError", "Node has pending network actions")
					}
				}
				if n.token != "" {
					return hilError(http.StatusConflict, "BlockedError", "Node's obm is enabled.")
				}
				n.project = ""
				return ok200
			}},
		{http.MethodGet, []string{"node", "{node}"}, fakeSchema{"node": "string"},
			func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
				n, e := f.mustNode(a.str("node"))
				if e != nil {
					return *e
				}
				if n.project != "" {
					if e := who.requireProjectAccess(n.project); e != nil {
						return *e
					}
				}
				nics := []map[string]any{}
				for _, c := range n.nics {
					nic := map[string]any{"label": c.label, "macaddr": c.mac, "networks": c.networks}
					if who.admin {
						nic["port"], nic["switch"] = c.port, "sw0"
					}
					nics = append(nics, nic)
				}
				var project any
				if n.project != "" {
					project = n.project
				}
				return hilJSON(http.StatusOK, map[string]any{"name": n.label, "project": project, "nics": nics, "metadata": map[string]any{}})
			}},
		{http.MethodPut, []string{"node", "{node}", "obm"}, fakeSchema{"node": "string", "enabled": "bool"},
			func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
				n, e := f.mustNode(a.str("node"))
				if e == nil {
					e = who.requireProjectAccess(n.project)
				}
				if e != nil {
					return *e
				}
				if a["enabled"].(bool) {
					tok, err := f.obmd.issue(n.obmdID)
					if err != nil {
						return htmlPage(http.StatusInternalServerError) // OBMd unreachable
					}
					n.token = tok
				} else {
					if err := f.obmd.revoke(n.obmdID); err != nil {
						return htmlPage(http.StatusInternalServerError)
					}
					n.token = ""
				}
				return ok200
			}},
		obmRoute(http.MethodPost, "power_on", nil),
		obmRoute(http.MethodPost, "power_off", nil),
		obmRoute(http.MethodPost, "power_cycle", fakeSchema{"force": "bool?"}),
		obmRoute(http.MethodGet, "power_status", nil),
		obmRoute(http.MethodPut, "boot_device", fakeSchema{"bootdev": "string"}),
		{http.MethodPost, []string{"node", "{node}", "nic", "{nic}", "detach_network"}, fakeSchema{"node": "string", "nic": "string", "network": "string"},
			func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
				n, e := f.mustNode(a.str("node"))
				if e != nil {
					return *e
				}
				network := a.str("network")
				if !f.networks[network] {
					return hilError(http.StatusNotFound, "NotFoundError", fmt.Sprintf("Network %s does not exist.", network))
				}
				i := slices.IndexFunc(n.nics, func(c *fakeNIC) bool { return c.label == a.str("nic") })
				if i < 0 {
					return hilError(http.StatusNotFound, "NotFoundError", fmt.Sprintf("Nic %s does not exist.", a.str("nic")))
				}
				nic := n.nics[i]
				if n.project == "" {
					return hilError(http.StatusConflict, "ProjectMismatchError", "Node not in project")
				}
				if e := who.requireProjectAccess(n.project); e != nil {
					return *e
				}
				if nic.pending != "" {
					return hilError(http.StatusConflict, "BlockedError", "A networking operation is already active on the nic.")
				}
				channel := ""
				for ch, net := range nic.networks {
					if net == network {
						channel = ch
					}
				}
				if channel == "" {
					return hilError(http.StatusBadRequest, "BadArgumentError", "The network is not attached to the nic.")
				}
				id := randomHex(16)
				f.actions[id] = &fakeAction{id: id, status: "PENDING", node: n.label, nic: nic.label, network: network, channel: channel}
				nic.pending = id
				return hilJSON(http.StatusAccepted, map[string]string{"status_id": id})
			}},
		{http.MethodGet, []string{"networking_action", "{id}"}, fakeSchema{"id": "string"},
			func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
				act, ok := f.actions[a.str("id")]
				if !ok {
					return hilError(http.StatusNotFound, "NotFoundError", fmt.Sprintf("NetworkingAction %s does not exist.", a.str("id")))
				}
				n := f.nodes[act.node]
				if e := who.requireProjectAccess(n.project); e != nil {
					return *e
				}
				f.runNetworkDaemon(act, n)
				return hilJSON(http.StatusOK, map[string]any{
					"status": act.status, "node": act.node, "nic": act.nic, "new_network": nil,
					"type": "modify_port", "channel": act.channel,
				})
			}},
	}
}

// runNetworkDaemon stands in for hil-admin serve-networks: an action is
// still PENDING at its first poll and processed by the second.
func (f *fakeHIL) runNetworkDaemon(act *fakeAction, n *fakeNode) {
	act.polls++
	if act.status != "PENDING" || act.polls < 2 || f.stuckActions {
		return
	}
	for _, c := range n.nics {
		if c.pending != act.id {
			continue
		}
		c.pending = ""
		if f.failActions {
			act.status = "ERROR"
			return
		}
		delete(c.networks, act.channel)
		act.status = "DONE"
	}
}

// obmRoute is a call HIL answers with a 307 to the node's OBMd.
func obmRoute(method, op string, schema fakeSchema) fakeRoute {
	s := fakeSchema{"node": "string"}
	for k, v := range schema {
		s[k] = v
	}
	return fakeRoute{method, []string{"node", "{node}", op}, s,
		func(f *fakeHIL, who fakeWho, a fakeArgs) fakeResp {
			n, e := f.mustNode(a.str("node"))
			if e == nil {
				e = who.requireProjectAccess(n.project)
			}
			if e != nil {
				return *e
			}
			if n.token == "" {
				return hilError(http.StatusConflict, "BlockedError", "OBM is not enabled")
			}
			loc := fmt.Sprintf("%s/node/%s/%s?token=%s", f.obmd.srv.URL, n.obmdID, op, n.token)
			r := htmlPage(http.StatusTemporaryRedirect)
			r.location = loc
			return r
		}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fakeOBMd replays OBMd's token-authenticated routes (CCI-MOC/obmd
// http.go): a malformed, missing or stale token is a bare 401, an unknown
// node 404, a power_cycle or boot_device body that does not decode 400, a
// boot device other than disk, pxe or none 400. HIL issues and revokes
// tokens through issue and revoke. It records every request it receives.
type fakeOBMd struct {
	srv *httptest.Server

	mu    sync.Mutex
	nodes map[string]*obmdNode
	reqs  []obmdReq
	down  bool // HIL cannot reach it: enabling or disabling an OBM fails
	// failWith, when set, answers every token-valid power call with this
	// status (a driver error is 500).
	failWith int
	// status overrides the power_status answer when set.
	status string
	// hang makes every request wait until the client gives up.
	hang bool
}

type obmdNode struct {
	token   string
	on      bool
	bootdev string
}

type obmdReq struct {
	Method, Path, Token, Body, Authorization string
}

func newFakeOBMd(t *testing.T) *fakeOBMd {
	o := &fakeOBMd{nodes: map[string]*obmdNode{}}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *fakeOBMd) addNode(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.nodes[id] = &obmdNode{}
}

func (o *fakeOBMd) issue(id string) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		return "", fmt.Errorf("obmd down")
	}
	o.nodes[id].token = randomHex(16)
	return o.nodes[id].token, nil
}

func (o *fakeOBMd) revoke(id string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		return fmt.Errorf("obmd down")
	}
	o.nodes[id].token = ""
	return nil
}

// forgetTokens is what a HIL restart leaves behind: OBMd no longer honours
// the tokens HIL still hands out.
func (o *fakeOBMd) forgetTokens() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, n := range o.nodes {
		n.token = ""
	}
}

func (o *fakeOBMd) requests() []obmdReq {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.reqs)
}

func (o *fakeOBMd) node(id string) obmdNode {
	o.mu.Lock()
	defer o.mu.Unlock()
	return *o.nodes[id]
}

func (o *fakeOBMd) set(fn func(o *fakeOBMd)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fn(o)
}

var obmdMethods = map[string]string{
	"power_on": http.MethodPost, "power_off": http.MethodPost, "power_cycle": http.MethodPost,
	"power_status": http.MethodGet, "boot_device": http.MethodPut,
}

func (o *fakeOBMd) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	tok := r.URL.Query().Get("token")
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reqs = append(o.reqs, obmdReq{Method: r.Method, Path: r.URL.Path, Token: tok, Body: string(body), Authorization: r.Header.Get("Authorization")})
	if o.hang {
		o.mu.Unlock()
		<-r.Context().Done()
		o.mu.Lock()
		return
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(segs) != 3 || segs[0] != "node" || obmdMethods[segs[2]] != r.Method {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	id, op := segs[1], segs[2]
	if b, err := hex.DecodeString(tok); err != nil || len(b) != 16 {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var cycle struct {
		Force *bool `json:"force"`
	}
	var boot struct {
		Dev string `json:"bootdev"`
	}
	switch op {
	case "power_cycle":
		if json.Unmarshal(body, &cycle) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	case "boot_device":
		if json.Unmarshal(body, &boot) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}
	n, ok := o.nodes[id]
	switch {
	case !ok:
		w.WriteHeader(http.StatusNotFound)
		return
	case n.token == "" || n.token != tok:
		w.WriteHeader(http.StatusUnauthorized)
		return
	case o.failWith != 0:
		w.WriteHeader(o.failWith)
		return
	}
	switch op {
	case "power_on", "power_cycle":
		n.on = true
	case "power_off":
		n.on = false
	case "boot_device":
		if boot.Dev != "disk" && boot.Dev != "pxe" && boot.Dev != "none" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n.bootdev = boot.Dev
	case "power_status":
		st := map[bool]string{true: "on", false: "off"}[n.on]
		if o.status != "" {
			st = o.status
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"power_status": st})
		return
	}
	w.WriteHeader(http.StatusOK)
}

// enableOBM enables a node's OBM, as an earlier PUT .../obm had.
func (f *fakeHIL) enableOBM(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[node]
	tok, err := f.obmd.issue(n.obmdID)
	if err != nil {
		panic(err)
	}
	n.token = tok
}

// obmdID returns a node's id at OBMd.
func (f *fakeHIL) obmdID(node string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[node].obmdID
}
