package appliance

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/malleable-cloud/malleable/appliance/broker"
)

// servedOpenAPI fetches the document the API serves and decodes it.
func servedOpenAPI(t *testing.T, e *apiEnv) (map[string]any, map[string]map[string]json.RawMessage) {
	t.Helper()
	rep := e.must(t, http.StatusOK, http.MethodGet, "/api/v1/openapi.json", "", nil)
	if ct := rep.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if !json.Valid(rep.body) {
		t.Fatalf("served OpenAPI document is not valid JSON")
	}
	var doc map[string]any
	var paths struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	rep.decode(t, &doc)
	rep.decode(t, &paths)
	return doc, paths.Paths
}

func TestOpenAPIDocument(t *testing.T) {
	e := newAPIEnv(t)
	doc, _ := servedOpenAPI(t, e)
	if v := doc["openapi"]; v != "3.1.0" {
		t.Errorf("openapi %v, want 3.1.0", v)
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] == nil || info["version"] == nil {
		t.Errorf("info lacks title or version: %v", info)
	}
	// Every local reference must resolve, or tools reject the document.
	var refs []string
	collectRefs(doc, &refs)
	if len(refs) == 0 {
		t.Fatal("no $ref found: the walk is broken")
	}
	for _, ref := range refs {
		if !resolves(doc, ref) {
			t.Errorf("$ref %q does not resolve", ref)
		}
	}
}

func collectRefs(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "$ref" {
				*out = append(*out, s)
				continue
			}
			collectRefs(x, out)
		}
	case []any:
		for _, x := range v {
			collectRefs(x, out)
		}
	}
}

// resolves reports whether ref, a local JSON pointer such as
// "#/components/schemas/Lease", names something in doc.
func resolves(doc map[string]any, ref string) bool {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = doc
	for _, tok := range strings.Split(p, "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[tok]; !ok {
			return false
		}
	}
	return true
}

// TestOpenAPIMatchesRouter checks both directions: every registered route
// is documented, and every documented operation is registered.
func TestOpenAPIMatchesRouter(t *testing.T) {
	e := newAPIEnv(t)
	_, paths := servedOpenAPI(t, e)

	registered := map[string]bool{} // "get /api/v1/nodes"
	// The listener's three APIs: admin, broker, M2.
	metrics := e.api.Metrics()
	routers := []*mux.Router{e.api.Router(), broker.New(broker.Config{}).Router(), Parts{}.m2Router(metrics)}
	walk := func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			t.Errorf("route without a path template: %v", err)
			return nil
		}
		methods, err := route.GetMethods()
		if err != nil {
			// Only the /api/v1 prefix that holds the subrouter has no
			// method and no handler of its own; any other route must be
			// restricted to its documented methods.
			if route.GetHandler() != nil {
				t.Errorf("route %s answers any method", tpl)
			}
			return nil
		}
		for _, m := range methods {
			registered[strings.ToLower(m)+" "+tpl] = true
		}
		return nil
	}
	for _, r := range routers {
		if err := r.Walk(walk); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range []string{"get /healthz", "get /metrics", "post /api/v1/leases/{id}/extend"} {
		if !registered[op] {
			t.Fatalf("the walk missed %s: %v", op, registered)
		}
	}

	// The keys of a path item that are operations; the others
	// ("parameters", "summary", ...) are not.
	operations := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	documented := map[string]bool{}
	for path, item := range paths {
		for key := range item {
			if slices.Contains(operations, key) {
				documented[key+" "+path] = true
			} else if key != "parameters" && key != "summary" && key != "description" && key != "servers" {
				t.Errorf("%s: unexpected key %q in a path item", path, key)
			}
		}
	}

	for op := range registered {
		if !documented[op] {
			t.Errorf("%s is served but not documented in openapi.json", op)
		}
	}
	for op := range documented {
		if !registered[op] {
			t.Errorf("%s is documented in openapi.json but not served", op)
		}
	}
}

// TestOpenAPIPathParameters checks that every {variable} in a documented
// path is declared as a path parameter, as OpenAPI requires.
func TestOpenAPIPathParameters(t *testing.T) {
	e := newAPIEnv(t)
	doc, _ := servedOpenAPI(t, e)
	components, _ := doc["components"].(map[string]any)
	params, _ := components["parameters"].(map[string]any)
	paths, _ := doc["paths"].(map[string]any)
	for path, v := range paths {
		item, _ := v.(map[string]any)
		declared := map[string]bool{}
		list, _ := item["parameters"].([]any)
		for _, p := range list {
			pm, _ := p.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				pm, _ = params[strings.TrimPrefix(ref, "#/components/parameters/")].(map[string]any)
			}
			if pm["in"] == "path" {
				declared[pm["name"].(string)] = true
			}
		}
		for rest := path; ; {
			_, after, ok := strings.Cut(rest, "{")
			if !ok {
				break
			}
			name, tail, _ := strings.Cut(after, "}")
			if !declared[name] {
				t.Errorf("%s: path parameter %q is not declared", path, name)
			}
			rest = tail
		}
	}
}
