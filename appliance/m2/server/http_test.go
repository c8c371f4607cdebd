package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/m2"
)

// state is everything the API can show of what exists, plus what storage
// and tgtd hold, so a test can show that a refused request left nothing.
type state struct {
	inventory
	images               []string
	acmeDisks, betaDisks []string
	acmeSnaps, betaSnaps []string
}

func (e *env) state() state {
	e.t.Helper()
	s := state{inventory: e.inventory()}
	var imgs []m2.Image
	e.must(http.StatusOK, http.MethodGet, "/m2/v1/images", "admin", nil, &imgs)
	for _, i := range imgs {
		s.images = append(s.images, i.Name)
	}
	s.acmeDisks, s.betaDisks = e.diskNames("acme"), e.diskNames("beta")
	s.acmeSnaps, s.betaSnaps = e.snapshotNames("acme"), e.snapshotNames("beta")
	return s
}

func (s state) equal(o state) bool {
	return slices.Equal(s.volumes, o.volumes) && slices.Equal(s.targets, o.targets) && slices.Equal(s.images, o.images) &&
		slices.Equal(s.acmeDisks, o.acmeDisks) && slices.Equal(s.betaDisks, o.betaDisks) &&
		slices.Equal(s.acmeSnaps, o.acmeSnaps) && slices.Equal(s.betaSnaps, o.betaSnaps)
}

func (e *env) snapshotNames(project string) []string {
	e.t.Helper()
	var ss []m2.Snapshot
	e.must(http.StatusOK, http.MethodGet, "/m2/v1/projects/"+project+"/snapshots", "admin", nil, &ss)
	names := []string{}
	for _, s := range ss {
		names = append(names, s.Name)
	}
	return names
}

// request is one API call of a table.
type request struct {
	method, path, caller string
	body                 any
	want                 int
	wantErr              string // substring of the JSON error; "" for success
	// location is where a redirect (the router cleaning a path) points.
	location string
	// undo, for a request that succeeds, removes what it made.
	undo *request
}

func (e *env) check(t *testing.T, r request) {
	t.Helper()
	status, body, header, err := e.roundTrip(r.method, r.path, r.caller, r.body)
	if err != nil {
		t.Fatal(err)
	}
	if got := header.Get("Location"); got != r.location {
		t.Fatalf("%s %s: Location %q, want %q", r.method, r.path, got, r.location)
	}
	if status != r.want {
		t.Fatalf("%s %s as %q: status %d, want %d: %s", r.method, r.path, r.caller, status, r.want, body)
	}
	if r.wantErr != "" {
		var resp struct{ Error string }
		if err := json.Unmarshal(body, &resp); err != nil || !strings.Contains(resp.Error, r.wantErr) {
			t.Fatalf("%s %s: body %s, want an error containing %q", r.method, r.path, body, r.wantErr)
		}
	}
	if r.undo != nil {
		e.check(t, *r.undo)
	}
}

// runTable runs each request on e and checks that it left e as it found it.
func (e *env) runTable(t *testing.T, tests map[string]request) {
	t.Helper()
	before := e.state()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := e.with(t)
			e.check(t, tc)
			if after := e.state(); !after.equal(before) {
				t.Fatalf("the request changed what exists:\n after %+v\nbefore %+v", after, before)
			}
		})
	}
}

// newAPIEnv is an env with golden image "golden", acme's disk "web"
// attached to node n1 and its snapshot "snap"; beta has nothing.
func newAPIEnv(t *testing.T) (*env, string) {
	t.Helper()
	e := newEnv(t, "")
	path, _ := goldenImage(t, imageSize, "M2-API", 0.001)
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/images", "admin", map[string]string{"name": "golden", "path": path}, nil)
	e.createDisk("acme", "web", "golden")
	e.attach("acme", "web", "n1")
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/projects/acme/disks/web/snapshots", "project:acme", map[string]string{"name": "snap"}, nil)
	return e, path
}

// TestCreateDiskBadInput proves that create_disk, through the real router,
// refuses every malformed or hostile request with the right status and a
// reason, and that none of them leaves a disk, volume or target behind.
func TestCreateDiskBadInput(t *testing.T) {
	t.Parallel()
	e, _ := newAPIEnv(t)
	const disks = "/m2/v1/projects/acme/disks"
	create := func(body any) request {
		return request{method: http.MethodPost, path: disks, caller: "project:acme", body: body}
	}
	bad := func(r request, want int, wantErr string) request { r.want, r.wantErr = want, wantErr; return r }
	named := func(name string) map[string]string { return map[string]string{"name": name, "image": "golden"} }
	const badName = "must be 1-63 characters"
	ok63 := strings.Repeat("a", 63)
	e.runTable(t, map[string]request{
		"name ../x":             bad(create(named("../x")), 400, badName),
		"name a/b":              bad(create(named("a/b")), 400, badName),
		"name %2e%2e":           bad(create(named("%2e%2e")), 400, badName),
		"name ..":               bad(create(named("..")), 400, badName),
		"name a..b":             bad(create(named("a..b")), 400, badName),
		"name .hidden":          bad(create(named(".hidden")), 400, badName),
		"name of 64 characters": bad(create(named(strings.Repeat("a", 64))), 400, badName),
		"name of 63 characters": {method: http.MethodPost, path: disks, caller: "project:acme", body: named(ok63), want: 201,
			undo: &request{method: http.MethodDelete, path: disks + "/" + ok63, caller: "project:acme", want: 204}},
		"name non-ASCII":        bad(create(named("disk-ü")), 400, badName),
		"name upper case":       bad(create(named("Web")), 400, badName),
		"name with _":           bad(create(named("web_1")), 400, badName),
		"name with a newline":   bad(create(named("web\n")), 400, badName),
		"name with a NUL":       bad(create(named("web\x00")), 400, badName),
		"name empty":            bad(create(named("")), 400, badName),
		"image ../golden":       bad(create(map[string]string{"name": "x", "image": "../golden"}), 400, `image "../golden"`),
		"image unknown":         bad(create(map[string]string{"name": "x", "image": "nosuch"}), 404, `image "nosuch": not found`),
		"image and snapshot":    bad(create(map[string]string{"name": "x", "image": "golden", "snapshot": "snap"}), 400, "exactly one of image or snapshot"),
		"neither":               bad(create(map[string]string{"name": "x"}), 400, "exactly one of image or snapshot"),
		"snapshot unknown":      bad(create(map[string]string{"name": "x", "snapshot": "nosuch"}), 404, `snapshot "nosuch" of project acme: not found`),
		"snapshot ../snap":      bad(create(map[string]string{"name": "x", "snapshot": "../snap"}), 400, `snapshot "../snap"`),
		"unknown field":         bad(create(map[string]any{"name": "x", "image": "golden", "size": 5}), 400, `unknown field "size"`),
		"data after the object": bad(create([]byte(`{"name":"x","image":"golden"} {}`)), 400, "unexpected data after the JSON object"),
		"malformed JSON":        bad(create([]byte(`{"name":`)), 400, "body"),
		"name not a string":     bad(create([]byte(`{"name":7,"image":"golden"}`)), 400, "name: must be a JSON string"),
		// The same mistakes answer as on /api/v1 (httpx.DecodeJSON).
		"body over 64 KiB": bad(create([]byte(`{"name":"`+strings.Repeat("a", 70<<10)+`","image":"golden"}`)), 413, "larger than 65536 bytes"),
		"form body":        bad(create(typedBody{"application/x-www-form-urlencoded", []byte("name=x&image=golden")}), 415, "body must be application/json"),
		"JSON with a charset": {method: http.MethodPost, path: disks, caller: "project:acme", body: typedBody{"application/json; charset=utf-8", []byte(`{"name":"utf8","image":"golden"}`)}, want: 201,
			undo: &request{method: http.MethodDelete, path: disks + "/utf8", caller: "project:acme", want: 204}},
		"existing name":          bad(create(named("web")), 409, `disk "web" of project acme: already exists`),
		"no credentials":         {method: http.MethodPost, path: disks, body: named("x"), want: 401, wantErr: "missing or invalid credentials"},
		"another project's path": {method: http.MethodPost, path: disks, caller: "project:beta", body: named("x"), want: 404, wantErr: `project "acme": not found`},
		"invalid project":        {method: http.MethodPost, path: "/m2/v1/projects/Acme/disks", caller: "admin", body: named("x"), want: 400, wantErr: `project "Acme"`},
		"project of 41 characters": {method: http.MethodPost, path: "/m2/v1/projects/" + strings.Repeat("p", 41) + "/disks", caller: "admin",
			body: named("x"), want: 400, wantErr: "DNS label of at most 40 characters"},
		// The router answers an encoded "../" with a redirect to the cleaned
		// path, never with a handler: whoever follows it is authorized
		// there afresh (as the isolation rows show).
		"traversal in the path": {method: http.MethodPost, path: disks + "/..%2fweb/snapshots", caller: "project:acme",
			body: map[string]string{"name": "x"}, want: 301, location: "/m2/v1/projects/acme/web/snapshots"},
		"traversal to another project": {method: http.MethodDelete, path: "/m2/v1/projects/beta/disks/..%2f..%2facme%2fdisks%2fweb", caller: "project:beta",
			want: 301, location: "/m2/v1/projects/acme/disks/web"},
		"dot-dot project": {method: http.MethodGet, path: "/m2/v1/projects/%2e%2e/disks", caller: "admin", want: 301, location: "/m2/v1/disks"},
		"traversal, followed": {method: http.MethodDelete, path: "/m2/v1/projects/acme/disks/web", caller: "project:beta",
			want: 404, wantErr: `project "acme": not found`},
		"snapshot name ../x": {method: http.MethodPost, path: disks + "/web/snapshots", caller: "project:acme",
			body: map[string]string{"name": "../x"}, want: 400, wantErr: `snapshot "../x"`},
		"snapshot name with _": {method: http.MethodPost, path: disks + "/web/snapshots", caller: "project:acme",
			body: map[string]string{"name": "s_1"}, want: 400, wantErr: `snapshot "s_1"`},
		"snapshot of a missing disk": {method: http.MethodPost, path: disks + "/nosuch/snapshots", caller: "project:acme",
			body: map[string]string{"name": "s1"}, want: 404, wantErr: `disk "nosuch" of project acme: not found`},
		"existing snapshot": {method: http.MethodPost, path: disks + "/web/snapshots", caller: "project:acme",
			body: map[string]string{"name": "snap"}, want: 409, wantErr: "already exists"},
		"attach to node ../x": {method: http.MethodPost, path: disks + "/web/attach", caller: "project:acme",
			body: map[string]string{"node": "../x"}, want: 400, wantErr: `node "../x" must be a DNS label`},
		"attach to another node": {method: http.MethodPost, path: disks + "/web/attach", caller: "project:acme",
			body: map[string]string{"node": "n2"}, want: 409, wantErr: "is attached to node n1"},
		"delete an attached disk": {method: http.MethodDelete, path: disks + "/web", caller: "project:acme",
			want: 409, wantErr: "detach it first"},
		"delete a missing disk": {method: http.MethodDelete, path: disks + "/nosuch", caller: "project:acme",
			want: 404, wantErr: `disk "nosuch" of project acme: not found`},
	})
}

// TestProjectIsolation proves that a project's caller cannot see, use or
// change another project's disks and snapshots: every such request answers
// 404, as for a disk that does not exist, and changes nothing.
func TestProjectIsolation(t *testing.T) {
	t.Parallel()
	e, _ := newAPIEnv(t)
	const acme = "/m2/v1/projects/acme"
	const notFound = `project "acme": not found`
	beta := func(method, path string, body any, want int, wantErr string) request {
		return request{method: method, path: path, caller: "project:beta", body: body, want: want, wantErr: wantErr}
	}
	e.runTable(t, map[string]request{
		"list acme's disks":       beta(http.MethodGet, acme+"/disks", nil, 404, notFound),
		"get acme's disk":         beta(http.MethodGet, acme+"/disks/web", nil, 404, notFound),
		"get a missing acme disk": beta(http.MethodGet, acme+"/disks/nosuch", nil, 404, notFound),
		"create in acme":          beta(http.MethodPost, acme+"/disks", map[string]string{"name": "x", "image": "golden"}, 404, notFound),
		"delete acme's disk":      beta(http.MethodDelete, acme+"/disks/web", nil, 404, notFound),
		"attach acme's disk":      beta(http.MethodPost, acme+"/disks/web/attach", map[string]string{"node": "n7"}, 404, notFound),
		"detach acme's disk":      beta(http.MethodPost, acme+"/disks/web/detach", nil, 404, notFound),
		"acme's boot script":      beta(http.MethodGet, acme+"/disks/web/boot.ipxe", nil, 404, notFound),
		"snapshot acme's disk":    beta(http.MethodPost, acme+"/disks/web/snapshots", map[string]string{"name": "mine"}, 404, notFound),
		"list acme's snapshots":   beta(http.MethodGet, acme+"/snapshots", nil, 404, notFound),
		"delete acme's snapshot":  beta(http.MethodDelete, acme+"/snapshots/snap", nil, 404, notFound),
		"acme's disk under beta":  beta(http.MethodGet, "/m2/v1/projects/beta/disks/web", nil, 404, `disk "web" of project beta: not found`),
		"acme's snapshot in beta": beta(http.MethodPost, "/m2/v1/projects/beta/disks", map[string]string{"name": "x", "snapshot": "snap"}, 404, `snapshot "snap" of project beta: not found`),
		"beta's disks list":       beta(http.MethodGet, "/m2/v1/projects/beta/disks", nil, 200, ""),
		"beta's snapshots list":   beta(http.MethodGet, "/m2/v1/projects/beta/snapshots", nil, 200, ""),
		"admin: acme's snapshot in beta": {method: http.MethodPost, path: "/m2/v1/projects/beta/disks", caller: "admin",
			body: map[string]string{"name": "x", "snapshot": "snap"}, want: 404, wantErr: `snapshot "snap" of project beta: not found`},
	})
	for _, path := range []string{"/m2/v1/projects/beta/disks", "/m2/v1/projects/beta/snapshots"} {
		if status, body := e.do(http.MethodGet, path, "project:beta", nil); status != 200 || !bytes.Equal(bytes.TrimSpace(body), []byte("[]")) {
			t.Errorf("GET %s as beta: %d %s, want an empty list", path, status, body)
		}
	}
}

// TestImagesAdminOnly proves that golden images are managed by admins
// only: a project's caller may list and read them, and gets 403 for the
// rest; an admin uploads and removes one, and a disk cloned from it stays.
func TestImagesAdminOnly(t *testing.T) {
	t.Parallel()
	e, path := newAPIEnv(t)
	upload := bytes.Repeat([]byte("m2-image"), 1<<16) // 512 KiB
	const admins = "golden images are managed by admins only"
	project := func(method, path string, body any, want int, wantErr string) request {
		return request{method: method, path: path, caller: "project:acme", body: body, want: want, wantErr: wantErr}
	}
	e.runTable(t, map[string]request{
		"project: list":   project(http.MethodGet, "/m2/v1/images", nil, 200, ""),
		"project: get":    project(http.MethodGet, "/m2/v1/images/golden", nil, 200, ""),
		"project: import": project(http.MethodPost, "/m2/v1/images", map[string]string{"name": "mine", "path": path}, 403, admins),
		"project: upload": project(http.MethodPut, "/m2/v1/images/mine", upload, 403, admins),
		"project: remove": project(http.MethodDelete, "/m2/v1/images/golden", nil, 403, admins),
		"no credentials":  {method: http.MethodDelete, path: "/m2/v1/images/golden", want: 401, wantErr: "missing or invalid credentials"},
		"admin: upload and remove": {method: http.MethodPut, path: "/m2/v1/images/up", caller: "admin", body: upload, want: 201,
			undo: &request{method: http.MethodDelete, path: "/m2/v1/images/up", caller: "admin", want: 204}},
		"admin: import a relative path": {method: http.MethodPost, path: "/m2/v1/images", caller: "admin",
			body: map[string]string{"name": "rel", "path": "golden.img"}, want: 400, wantErr: "absolute path"},
		"admin: import an existing name": {method: http.MethodPost, path: "/m2/v1/images", caller: "admin",
			body: map[string]string{"name": "golden", "path": path}, want: 409, wantErr: `image "golden": already exists`},
		"admin: upload ..x":         {method: http.MethodPut, path: "/m2/v1/images/..x", caller: "admin", body: upload, want: 400, wantErr: `image "..x"`},
		"admin: upload ../etc":      {method: http.MethodPut, path: "/m2/v1/images/..%2fetc", caller: "admin", body: upload, want: 301, location: "/m2/v1/etc"},
		"admin: upload %2e%2e":      {method: http.MethodPut, path: "/m2/v1/images/%2e%2e", caller: "admin", body: upload, want: 301, location: "/m2/v1"},
		"admin: upload upper case":  {method: http.MethodPut, path: "/m2/v1/images/Up", caller: "admin", body: upload, want: 400, wantErr: `image "Up"`},
		"admin: remove a missing":   {method: http.MethodDelete, path: "/m2/v1/images/nosuch", caller: "admin", want: 404, wantErr: `image "nosuch": not found`},
		"admin: import name ../x":   {method: http.MethodPost, path: "/m2/v1/images", caller: "admin", body: map[string]string{"name": "../x", "path": path}, want: 400, wantErr: `image "../x"`},
		"admin: import unknown key": {method: http.MethodPost, path: "/m2/v1/images", caller: "admin", body: map[string]string{"name": "x", "path": path, "url": "x"}, want: 400, wantErr: `unknown field "url"`},
	})

	// An uploaded image is what was sent; a disk cloned from it outlives it.
	var img m2.Image
	e.must(http.StatusCreated, http.MethodPut, "/m2/v1/images/up", "admin", upload, &img)
	if img.Size != int64(len(upload)) || img.SHA256 != sha256Hex(upload) {
		t.Fatalf("uploaded image %+v, want %d bytes, sha256 %s", img, len(upload), sha256Hex(upload))
	}
	e.createDisk("acme", "from-up", "up")
	e.must(http.StatusNoContent, http.MethodDelete, "/m2/v1/images/up", "admin", nil, nil)
	var d m2.Disk
	e.must(http.StatusOK, http.MethodGet, "/m2/v1/projects/acme/disks/from-up", "project:acme", nil, &d)
	if d.Size != img.Size || d.Source != "image:up" {
		t.Fatalf("disk after its image went: %+v", d)
	}
}

// TestCreateDiskConcurrent proves that of concurrent create_disk requests
// for one name exactly one wins (201) and the rest get 409, and that
// volumes and targets match the disks that exist.
func TestCreateDiskConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-RACE")
	tests := map[string]struct {
		project  string
		requests int
		names    int // requests go round-robin over this many names
	}{
		"two requests, one name":       {project: "p2", requests: 2, names: 1},
		"20 requests, one name":        {project: "p20", requests: 20, names: 1},
		"20 requests, four names":      {project: "p4", requests: 20, names: 4},
		"eight requests, each its own": {project: "p8", requests: 8, names: 8},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := e.with(t)
			before := e.inventory()
			statuses := make([]int, tc.requests)
			bodies := make([][]byte, tc.requests)
			errs := make([]error, tc.requests)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range tc.requests {
				wg.Go(func() {
					<-start
					statuses[i], bodies[i], errs[i] = e.send(http.MethodPost, "/m2/v1/projects/"+tc.project+"/disks", "project:"+tc.project,
						map[string]string{"name": "d" + string(rune('a'+i%tc.names)), "image": "golden"})
				})
			}
			close(start)
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			created, conflicts := 0, 0
			for i, s := range statuses {
				switch s {
				case http.StatusCreated:
					created++
				case http.StatusConflict:
					conflicts++
					if !strings.Contains(string(bodies[i]), "already exists") {
						t.Errorf("409 without the reason: %s", bodies[i])
					}
				default:
					t.Errorf("request %d: status %d: %s", i, s, bodies[i])
				}
			}
			if created != tc.names || conflicts != tc.requests-tc.names {
				t.Fatalf("%d created, %d conflicts; want %d and %d", created, conflicts, tc.names, tc.requests-tc.names)
			}
			after := e.inventory()
			if len(after.volumes)-len(before.volumes) != tc.names || len(after.targets)-len(before.targets) != tc.names {
				t.Fatalf("volumes %d -> %d, targets %d -> %d; want %d more of each",
					len(before.volumes), len(after.volumes), len(before.targets), len(after.targets), tc.names)
			}
			if got := e.diskNames(tc.project); len(got) != tc.names {
				t.Fatalf("disks of %s: %q, want %d", tc.project, got, tc.names)
			}
			for _, n := range e.diskNames(tc.project) {
				if !slices.Contains(after.targets, iqnPrefix+":"+tc.project+"."+n) {
					t.Errorf("disk %s has no target in %q", n, after.targets)
				}
			}
		})
	}
}
