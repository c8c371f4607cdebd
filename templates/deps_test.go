package templates

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNoApplianceInternals keeps templates a leaf the appliance
// builds on, never the other way round: none of its dependencies may live
// under appliance/.
func TestImportsNoApplianceInternals(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if strings.Contains(dep, "/malleable/appliance") {
			t.Errorf("templates depends on %s", dep)
		}
	}
}
