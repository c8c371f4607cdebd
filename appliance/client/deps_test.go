package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDoesNotLinkTheStore keeps the CLI's client light: it speaks HTTP only,
// so neither the store nor SQLite may be among its dependencies.
func TestDoesNotLinkTheStore(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if strings.HasSuffix(dep, "/appliance/store") || strings.Contains(dep, "sqlite") {
			t.Errorf("appliance/client depends on %s", dep)
		}
	}
}
