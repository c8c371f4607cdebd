package m2

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// TestClientWire checks what the client sends and how it reads answers,
// against a recorded stand-in (the server's tests and the smart-proxy's
// end-to-end test run it against the real backend).
func TestClientWire(t *testing.T) {
	const bootToken = "b0075ecre7b0075ecre7b0075ecre7b0"
	type seen struct{ method, path, auth, ct, body string }
	var got []seen
	answers := map[string]struct {
		status int
		body   string
	}{
		"GET /m2/v1/boot/" + bootToken:                {200, "#!ipxe\n"},
		"GET /m2/v1/projects/acme/disks/a%2Fb":        {404, `{"error":"not found"}`},
		"POST /m2/v1/projects/acme/disks":             {201, `{"project":"acme","name":"d1","source":"image:img","target":{"portal":"10.0.0.1:3260","iqn":"iqn.x","lun":1,"chap_user":"u"}}`},
		"POST /m2/v1/projects/acme/disks/d1/attach":   {200, `{"disk":"d1","node":"node-1","initiator":"iqn.n","boot_token":"t"}`},
		"GET /m2/v1/projects/acme/disks/d1/boot.ipxe": {409, `{"error":"disk acme/d1 is not attached"}`},
		"PUT /m2/v1/images/img":                       {201, `{"name":"img","size":4}`},
		"DELETE /m2/v1/projects/acme/snapshots/s1":    {204, ``},
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		a, ok := answers[r.Method+" "+r.URL.EscapedPath()]
		if !ok {
			a.status, a.body = 599, "unexpected"
		}
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))
	defer app.Close()
	c := NewClient(app.URL+"/", "mlb_token", nil)
	ctx := context.Background()

	if b, err := c.BootScript(ctx, bootToken); err != nil || string(b) != "#!ipxe\n" {
		t.Errorf("BootScript = %q, %v", b, err)
	}
	if _, err := c.Disk(ctx, "acme", "a/b"); httpx.StatusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "not found (HTTP 404)") {
		t.Errorf("Disk = %v", err)
	}
	if d, err := c.CreateDisk(ctx, "acme", "d1", "img", ""); err != nil || d.Target.LUN != 1 || d.Source != "image:img" {
		t.Errorf("CreateDisk = %+v, %v", d, err)
	}
	if a, err := c.Attach(ctx, "acme", "d1", "node-1"); err != nil || a.BootToken != "t" {
		t.Errorf("Attach = %+v, %v", a, err)
	}
	if _, err := c.DiskBootScript(ctx, "acme", "d1"); httpx.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "is not attached") {
		t.Errorf("DiskBootScript of a detached disk = %v", err)
	}
	if img, err := c.UploadImage(ctx, "img", strings.NewReader("data"), 4); err != nil || img.Size != 4 {
		t.Errorf("UploadImage = %+v, %v", img, err)
	}
	if err := c.RemoveSnapshot(ctx, "acme", "s1"); err != nil {
		t.Errorf("RemoveSnapshot = %v", err)
	}
	want := []seen{
		{"GET", "/m2/v1/boot/" + bootToken, "Bearer mlb_token", "", ""}, // only this caller's scripts
		{"GET", "/m2/v1/projects/acme/disks/a%2Fb", "Bearer mlb_token", "", ""},
		{"POST", "/m2/v1/projects/acme/disks", "Bearer mlb_token", "application/json", `{"image":"img","name":"d1"}`},
		{"POST", "/m2/v1/projects/acme/disks/d1/attach", "Bearer mlb_token", "application/json", `{"node":"node-1"}`},
		{"GET", "/m2/v1/projects/acme/disks/d1/boot.ipxe", "Bearer mlb_token", "", ""},
		{"PUT", "/m2/v1/images/img", "Bearer mlb_token", "application/octet-stream", "data"},
		{"DELETE", "/m2/v1/projects/acme/snapshots/s1", "Bearer mlb_token", "", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v\nwant %+v", got, want)
	}

	// Unreachable: the error names the route, never a boot token.
	app.Close()
	_, err := c.BootScript(ctx, bootToken)
	if err == nil || strings.Contains(err.Error(), bootToken) || !strings.Contains(err.Error(), "/m2/v1/boot/<token>") {
		t.Errorf("unreachable appliance: %v", err)
	}
}
