package server_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/m2"
)

// as sends every request as one caller of the test router.
type as struct{ caller string }

func (a as) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(callerHeader, a.caller)
	return http.DefaultTransport.RoundTrip(r)
}

// An offboarded tenant's storage goes, attached disks included, through
// the backend itself and through the API (a standalone backend); another
// tenant's stays.
func TestRemoveProject(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-REMOVE")
	e.createDisk("acme", "web", "golden")
	e.createDisk("acme", "db", "golden")
	e.attach("acme", "web", "n1")
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/projects/acme/disks/db/snapshots", "project:acme", map[string]string{"name": "s1"}, nil)
	e.createDisk("globex", "web", "golden")
	e.createDisk("initech", "app", "golden")
	e.attach("initech", "app", "n2")
	ctx := context.Background()

	n, err := e.backend.RemoveTenantDisks(ctx, "acme")
	if err != nil || n != 3 {
		t.Fatalf("RemoveTenantDisks(acme) = %d, %v; want 3 (two disks, one snapshot)", n, err)
	}
	if names := e.diskNames("acme"); len(names) != 0 {
		t.Errorf("acme's disks left: %v", names)
	}
	if snaps, _ := e.backend.Snapshots(ctx, "acme"); len(snaps) != 0 {
		t.Errorf("acme's snapshots left: %v", snaps)
	}

	c := m2.NewClient(e.srv.URL, "unused", &http.Client{Transport: as{"project:initech"}})
	if n, err := m2.RemoveProject(ctx, c, "initech"); err != nil || n != 1 {
		t.Fatalf("RemoveProject(initech) over the API = %d, %v; want 1", n, err)
	}
	if names := e.diskNames("initech"); len(names) != 0 {
		t.Errorf("initech's disks left: %v", names)
	}
	if names := e.diskNames("globex"); !slices.Equal(names, []string{"web"}) {
		t.Errorf("globex's disks: %v, want web untouched", names)
	}
	if _, err := m2.RemoveProject(ctx, c, "globex"); err == nil {
		t.Error("initech's caller removed globex's disks")
	}
	if names := e.diskNames("globex"); !slices.Equal(names, []string{"web"}) {
		t.Errorf("globex's disks after initech tried: %v", names)
	}
}
