// Package foremantest gives tests a Foreman: Start runs a Foreman API
// fixture (an httptest server answering exactly the API v2 calls
// appliance/foreman makes, with the shapes the real Foreman 3.12 answered
// here), and StartReal runs the real Foreman of the kit
// (local/foreman:3.12 + local/postgres:15), skipping loudly without it.
// Import it from _test.go files only.
package foremantest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Instance is a running Foreman, fixture or real.
type Instance struct {
	// URL is Foreman's root (http://127.0.0.1:port).
	URL string
	// User and Password are the seeded admin's login.
	User, Password string
	// Organization and Location are the seeded taxonomies.
	Organization, Location string
	// Real is true for the kit's real Foreman.
	Real bool
}

// Options configure a Foreman, fixture or real.
type Options struct {
	// AdminPassword seeds the admin's password ("admin" is the login).
	AdminPassword string
	// Organization and Location are seeded; "Default Organization" and
	// "Default Location" when empty.
	Organization, Location string
	// ClientCertPEM and ClientKeyPEM are the certificate Foreman presents
	// to smart-proxies; ProxyCAPEM is the CA it trusts for them. Without
	// them Foreman calls proxies without a client certificate.
	ClientCertPEM, ClientKeyPEM, ProxyCAPEM []byte
}

func (o *Options) defaults() {
	if o.AdminPassword == "" {
		o.AdminPassword = "foreman-admin-pw-0123"
	}
	if o.Organization == "" {
		o.Organization = "Default Organization"
	}
	if o.Location == "" {
		o.Location = "Default Location"
	}
}

// Fixture is the Foreman API fixture.
type Fixture struct {
	Instance
	srv   *httptest.Server
	proxy *http.Client // calls smart-proxies as Foreman does
	log   *slog.Logger

	mu      sync.Mutex
	nextID  int
	users   map[int]*user
	taxa    map[string]map[int]string // organizations|locations -> id -> name
	setting map[string]any
	proxies map[int]*smartProxy
	subnets map[int]*subnet
	hosts   map[int]*host
	kinds   map[int]string
	tmpls   map[int]*template
	calls   []string
}

// Start runs the fixture until the test ends.
func Start(tb testing.TB, opts Options) *Fixture {
	tb.Helper()
	opts.defaults()
	f := &Fixture{nextID: 1, users: map[int]*user{}, taxa: map[string]map[int]string{"organizations": {}, "locations": {}},
		setting: map[string]any{"default_organization": nil, "default_location": nil},
		proxies: map[int]*smartProxy{}, subnets: map[int]*subnet{}, hosts: map[int]*host{}, kinds: map[int]string{},
		tmpls: map[int]*template{}, log: slog.New(slog.DiscardHandler)}
	f.users[f.id()] = &user{Login: "admin", Password: opts.AdminPassword, Admin: true}
	f.taxa["organizations"][f.id()] = opts.Organization
	f.taxa["locations"][f.id()] = opts.Location
	for _, k := range []string{"PXELinux", "PXEGrub", "PXEGrub2", "iPXE", "provision", "finish", "script", "user_data",
		"ZTP", "POAP", "cloud-init", "host_init_config", "registration", "kexec", "Bootdisk", "public"} {
		f.kinds[f.id()] = k
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(opts.ProxyCAPEM) > 0 {
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(opts.ProxyCAPEM) {
			tb.Fatal("foremantest: ProxyCAPEM holds no certificate")
		}
	}
	if len(opts.ClientCertPEM) > 0 {
		cert, err := tls.X509KeyPair(opts.ClientCertPEM, opts.ClientKeyPEM)
		if err != nil {
			tb.Fatalf("foremantest: client certificate: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	f.proxy = &http.Client{Transport: tr, Timeout: 60 * time.Second} // proxy_request_timeout
	f.srv = httptest.NewServer(f.routes())
	tb.Cleanup(f.srv.Close)
	f.Instance = Instance{URL: f.srv.URL, User: "admin", Password: opts.AdminPassword,
		Organization: opts.Organization, Location: opts.Location}
	return f
}

// Calls returns every request the fixture answered, as "METHOD path".
func (f *Fixture) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// id returns a fresh record id; ids are unique across collections, which
// Foreman's are not, so a test mixing them up fails.
func (f *Fixture) id() int { f.nextID++; return f.nextID }

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Foreman_api_version", "2")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers Foreman's error layout: {"error": ...} laid out on
// three lines, as api/v2/layouts/error_layout renders it.
func writeError(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Foreman_api_version", "2")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\n  \"error\": %s\n}\n", b)
}

// errorMessage answers Foreman's {"error":{"message":...}}.
func errorMessage(w http.ResponseWriter, status int, msg string) {
	writeError(w, status, map[string]any{"message": msg})
}

// invalid answers a 422 as Foreman does: errors by attribute and their
// full messages.
func invalid(w http.ResponseWriter, id any, errs map[string][]string, full []string) {
	writeError(w, http.StatusUnprocessableEntity, map[string]any{"id": id, "errors": errs, "full_messages": full})
}

// notFound answers Foreman's 404 for a record.
func notFound(w http.ResponseWriter, resource, id string) {
	errorMessage(w, http.StatusNotFound, "Resource "+resource+" not found by id '"+id+"'")
}

// index answers a page holding every result. Like Foreman, per_page=all
// answers with per_page set to the total (not to the results' count).
func index(w http.ResponseWriter, r *http.Request, total int, results []any) {
	if results == nil {
		results = []any{}
	}
	search := r.URL.Query().Get("search")
	var s any
	if search != "" {
		s = search
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": total, "subtotal": len(results), "page": 1,
		"per_page": perPage(r, total), "search": s, "sort": map[string]any{"by": nil, "order": nil}, "results": results})
}

func perPage(r *http.Request, n int) any {
	if p := r.URL.Query().Get("per_page"); p == "all" {
		return n
	} else if v, err := strconv.Atoi(p); err == nil {
		return v
	}
	return 20
}

// searchTerm returns the value of a search `field="value"` (or
// field=value), and whether the search names field. Foreman's match is
// exact and case-sensitive.
func searchTerm(r *http.Request, field string) (string, bool) {
	s := strings.TrimSpace(r.URL.Query().Get("search"))
	if s == "" {
		return "", false
	}
	v, ok := strings.CutPrefix(s, field+"=")
	if !ok {
		v, ok = strings.CutPrefix(s, field+" = ")
	}
	if !ok {
		return "", false
	}
	if uq, err := strconv.Unquote(v); err == nil {
		v = uq
	}
	return v, true
}
