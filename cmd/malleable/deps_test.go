package main

import (
	"os/exec"
	"path"
	"strings"
	"testing"
)

const module = "github.com/malleable-cloud/malleable"

// TestImportsPointDown keeps the layering the README's layout table
// promises, over everything the binary links: no package imports its
// parent (the one exception ARCHITECTURE.md allows: m2/server implements
// m2's API and uses its types), and only this command imports the trunk
// package appliance, which holds the wiring.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{module + "/appliance/m2/server -> " + module + "/appliance/m2": true}
	seen := 0
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		pkg := f[0]
		if !strings.HasPrefix(pkg, module+"/") {
			continue
		}
		seen++
		for _, imp := range f[1:] {
			if imp == path.Dir(pkg) && !allowed[pkg+" -> "+imp] {
				t.Errorf("%s imports its parent %s", pkg, imp)
			}
			if imp == module+"/appliance" && pkg != module+"/cmd/malleable" {
				t.Errorf("%s imports the trunk package appliance (wiring); only cmd/malleable may", pkg)
			}
		}
	}
	if seen < 20 {
		t.Fatalf("saw only %d of our packages; go list's output changed?\n%s", seen, out)
	}
}
