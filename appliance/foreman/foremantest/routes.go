package foremantest

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// routes is the fixture's API: /api/... and the same under /api/v2/.
func (f *Fixture) routes() http.Handler {
	mux := http.NewServeMux()
	open := map[string]http.HandlerFunc{
		"GET /api/ping": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]any{"results": map[string]any{"foreman": map[string]any{
				"database": map[string]any{"active": true, "duration_ms": "0"}}}})
		},
	}
	authed := map[string]func(http.ResponseWriter, *http.Request, map[string]any){
		"GET /api/status": func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
			writeJSON(w, 200, map[string]any{"result": "ok", "status": 200, "version": "3.12.0", "api_version": 2})
		},
		"GET /api/organizations":               f.taxonomyIndex("organizations"),
		"GET /api/locations":                   f.taxonomyIndex("locations"),
		"POST /api/organizations":              f.taxonomyCreate("organizations", "organization"),
		"POST /api/locations":                  f.taxonomyCreate("locations", "location"),
		"PUT /api/organizations/{id}":          f.taxonomyUpdate("organizations", "organization"),
		"PUT /api/locations/{id}":              f.taxonomyUpdate("locations", "location"),
		"GET /api/users":                       f.userIndex,
		"PUT /api/users/{id}":                  f.userUpdate,
		"GET /api/settings/{name}":             f.settingShow,
		"PUT /api/settings/{name}":             f.settingUpdate,
		"GET /api/smart_proxies":               f.proxyIndex,
		"GET /api/smart_proxies/{id}":          f.proxyShow,
		"POST /api/smart_proxies":              f.proxyCreate,
		"PUT /api/smart_proxies/{id}":          f.proxyUpdate,
		"PUT /api/smart_proxies/{id}/refresh":  f.proxyRefresh,
		"DELETE /api/smart_proxies/{id}":       f.proxyDelete,
		"GET /api/subnets":                     f.subnetIndex,
		"POST /api/subnets":                    f.subnetCreate,
		"PUT /api/subnets/{id}":                f.subnetUpdate,
		"GET /api/hosts":                       f.hostIndex,
		"GET /api/hosts/{id}":                  f.hostShow,
		"POST /api/hosts":                      f.hostCreate,
		"PUT /api/hosts/{id}":                  f.hostUpdate,
		"DELETE /api/hosts/{id}":               f.hostDelete,
		"GET /api/hosts/{id}/power":            f.powerShow,
		"PUT /api/hosts/{id}/power":            f.powerSet,
		"GET /api/template_kinds":              f.kindIndex,
		"GET /api/provisioning_templates":      f.templateIndex,
		"GET /api/provisioning_templates/{id}": f.templateShow,
		"POST /api/provisioning_templates":     f.templateCreate,
		"PUT /api/provisioning_templates/{id}": f.templateUpdate,
	}
	for pattern, h := range open {
		mux.Handle(pattern, h)
	}
	for pattern, h := range authed {
		mux.Handle(pattern, f.authed(h))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Rails' public/404.html, whatever the Accept header.
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "<!DOCTYPE html>\n<html>\n<head>\n  <title>The page you were looking for doesn't exist (404)</title>\n</head>\n</html>\n")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		if p, ok := strings.CutPrefix(r.URL.Path, "/api/v2/"); ok {
			r.URL.Path = "/api/" + p
		}
		mux.ServeHTTP(w, r)
	})
}

// authed checks the Basic login, the JSON content type of writes and
// decodes the body, as Foreman's API base controller does.
func (f *Fixture) authed(h func(http.ResponseWriter, *http.Request, map[string]any)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		login, pw, ok := r.BasicAuth()
		if !ok || !f.loginOK(login, pw) {
			errorMessage(w, http.StatusUnauthorized, "Unable to authenticate user "+login)
			return
		}
		var body map[string]any
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if ct != "application/json" {
				errorMessage(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Media type in 'Content-Type: %s' is unsupported in API v2 for POST and PUT requests. Please use 'Content-Type: application/json'.", r.Header.Get("Content-Type")))
				return
			}
			b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if len(strings.TrimSpace(string(b))) > 0 {
				if err := json.Unmarshal(b, &body); err != nil {
					writeJSON(w, 400, map[string]any{"status": 400, "error": "There was a problem in the JSON you submitted: " + err.Error()})
					return
				}
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		h(w, r, body)
	})
}

func (f *Fixture) loginOK(login, pw string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range f.users {
		if u.Login == login && subtle.ConstantTimeCompare([]byte(u.Password), []byte(pw)) == 1 {
			return true
		}
	}
	return false
}

// attrs returns the object a body wraps under singular.
func attrs(body map[string]any, singular string) map[string]any {
	m, _ := body[singular].(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	return m
}

func str(m map[string]any, k string) (string, bool) {
	s, ok := m[k].(string)
	return s, ok
}

func num(m map[string]any, k string) int {
	switch v := m[k].(type) {
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

func ids(m map[string]any, k string) []int {
	l, _ := m[k].([]any)
	var out []int
	for _, v := range l {
		if n, ok := v.(float64); ok {
			out = append(out, int(n))
		}
	}
	return out
}

func pathID(r *http.Request) int {
	n, _ := strconv.Atoi(r.PathValue("id"))
	return n
}

// listByName answers Foreman's index of m, with its exact name search.
func listByName[T any](w http.ResponseWriter, r *http.Request, m map[int]T, name func(T) string, show func(id int) any) {
	want, filter := searchTerm(r, "name")
	var out []any
	for _, id := range sortedIDs(m) {
		if !filter || name(m[id]) == want {
			out = append(out, show(id))
		}
	}
	index(w, r, len(m), out)
}

// showOne answers one record of m by the path's id, or Foreman's 404.
func showOne[T any](w http.ResponseWriter, r *http.Request, m map[int]T, kind string, show func(id int) any) {
	if _, ok := m[pathID(r)]; !ok {
		notFound(w, kind, r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, show(pathID(r)))
}

// sortedIDs returns a map's keys in order.
func sortedIDs[T any](m map[int]T) []int {
	out := make([]int, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Ints(out)
	return out
}

// taken reports whether another record than id has name.
func taken[T any](m map[int]T, id int, name string, nameOf func(T) string) bool {
	for other, v := range m {
		if other != id && strings.EqualFold(nameOf(v), name) {
			return true
		}
	}
	return false
}
