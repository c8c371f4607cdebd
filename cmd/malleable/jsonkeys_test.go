package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// apiGet fetches path from d's admin API and returns the raw answer.
func (d *daemon) apiGet(t *testing.T, path string) []byte {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(d.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+d.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}

// jsonKeys returns every key path in a JSON document ("[].bmc.host"),
// sorted and without duplicates.
func jsonKeys(t *testing.T, doc []byte) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, doc)
	}
	var keys []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				keys = append(keys, prefix+"."+k)
				walk(prefix+"."+k, x)
			}
		case []any:
			for _, x := range v {
				walk(prefix+"[]", x)
			}
		}
	}
	walk("", v)
	slices.Sort(keys)
	return slices.Compact(keys)
}

// TestCLIJSONMatchesAPI: `-o json` prints what the API sends, with the
// API's keys, not the CLI's Go field names.
func TestCLIJSONMatchesAPI(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"))
	d.ok(t, "node", "add", "node-1", "--mac", "52:54:00:aa:00:01", "--bmc", "127.0.0.1:9623", "--bmc-user", "admin", "--description", "rack 1")
	d.ok(t, "node", "add", "node-2", "--mac", "52:54:00:aa:00:02")
	d.ok(t, "tenant", "add", "acme", "--description", "a tenant")
	d.ok(t, "lease", "add", "--node", "node-2", "--tenant", "acme", "--start", "now", "--duration", "1h")

	var pass struct {
		ID int64 `json:"id"`
	}
	out := d.ok(t, "reconcile", "now", "-o", "json")
	if err := json.Unmarshal([]byte(out), &pass); err != nil || pass.ID == 0 {
		t.Fatalf("reconcile now -o json: %v\n%s", err, out)
	}
	var hs []struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal(d.apiGet(t, "/api/v1/handovers"), &hs)
	if len(hs) != 1 {
		t.Fatalf("handovers: %+v", hs)
	}

	for _, tc := range []struct {
		cli []string
		api string
	}{
		{[]string{"reconcile", "now", "-o", "json"}, ""}, // compared below: a new pass each time
		{[]string{"reconcile", "show", fmt.Sprint(pass.ID), "-o", "json"}, fmt.Sprintf("/api/v1/reconcile/passes/%d", pass.ID)},
		{[]string{"lease", "handovers", "-o", "json"}, "/api/v1/handovers?limit=100"},
		{[]string{"lease", "handover", fmt.Sprint(hs[0].ID), "-o", "json"}, fmt.Sprintf("/api/v1/handovers/%d", hs[0].ID)},
		{[]string{"lease", "list", "-o", "json"}, "/api/v1/leases"},
		{[]string{"lease", "show", "1", "-o", "json"}, "/api/v1/leases/1"},
		{[]string{"node", "list", "-o", "json"}, "/api/v1/nodes"},
		{[]string{"node", "show", "node-1", "-o", "json"}, "/api/v1/nodes/node-1"},
		{[]string{"tenant", "list", "-o", "json"}, "/api/v1/tenants"},
		{[]string{"tenant", "show", "acme", "-o", "json"}, "/api/v1/tenants/acme"},
		{[]string{"audit", "list", "--limit", "5", "-o", "json"}, "/api/v1/audit?limit=5"},
	} {
		name := strings.Join(tc.cli, " ")
		cliOut := []byte(d.ok(t, tc.cli...))
		api := tc.api
		if api == "" {
			json.Unmarshal(cliOut, &pass)
			api = fmt.Sprintf("/api/v1/reconcile/passes/%d", pass.ID)
		}
		got, want := jsonKeys(t, cliOut), jsonKeys(t, d.apiGet(t, api))
		if !slices.Equal(got, want) {
			t.Errorf("%s: keys\n  %v\nwant (GET %s)\n  %v", name, got, api, want)
		}
	}
}
