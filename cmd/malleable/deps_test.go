package main

import (
	"os/exec"
	"path"
	"strings"
	"testing"
)

const module = "github.com/malleable-cloud/malleable"

// sdkOwners are the one package of ours that may import each SDK: the
// rest of the code depends on their narrow interfaces.
var sdkOwners = map[string]string{
	"github.com/docker/docker":       module + "/tenants/docker",
	"github.com/hashicorp/vault/api": module + "/appliance/secrets/vault",
}

// TestClientLinksNoStore: the CLI's API client links neither SQLite nor
// the Docker or Vault SDKs.
func TestClientLinksNoStore(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", module+"/appliance/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, heavy := range []string{"modernc.org/sqlite", "github.com/docker/docker/client", "github.com/hashicorp/vault/api"} {
		if strings.Contains(string(out), heavy+"\n") {
			t.Errorf("appliance/client links %s", heavy)
		}
	}
}

// TestImportsPointDown keeps the layering the README's layout table
// promises, over everything the binary links: no package imports its
// parent (but implementations of the parent's contract: m2/server of m2's
// API, secrets/vault of the secret store), only this command imports the
// trunk package appliance, which holds the wiring, and one package owns
// each SDK.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	// An implementation of its parent's contract uses the contract's types
	// (ARCHITECTURE.md §2: "a subpackage uses its parent's types").
	allowed := map[string]bool{
		module + "/appliance/m2/server -> " + module + "/appliance/m2":          true,
		module + "/appliance/secrets/vault -> " + module + "/appliance/secrets": true,
	}
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
			for sdk, owner := range sdkOwners {
				if (imp == sdk || strings.HasPrefix(imp, sdk+"/")) && pkg != owner {
					t.Errorf("%s imports %s; only %s may", pkg, imp, owner)
				}
			}
		}
	}
	if seen < 20 {
		t.Fatalf("saw only %d of our packages; go list's output changed?\n%s", seen, out)
	}
}
