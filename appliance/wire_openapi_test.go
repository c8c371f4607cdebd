package appliance

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
)

// jsonFields returns the JSON names a value of type t encodes and decodes,
// embedded structs flattened, as encoding/json does.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestOpenAPISchemasMatchWireTypes: every schema of openapi.json that
// documents a body has exactly the fields of the one Go type the server
// and its clients use for it, so the document and the code cannot drift.
func TestOpenAPISchemasMatchWireTypes(t *testing.T) {
	types := map[string]reflect.Type{
		"BMC":             reflect.TypeFor[wire.BMC](),
		"NodeRequest":     reflect.TypeFor[wire.NodeRequest](),
		"TenantRequest":   reflect.TypeFor[wire.TenantRequest](),
		"Lease":           reflect.TypeFor[wire.Lease](),
		"LeaseRequest":    reflect.TypeFor[wire.LeaseRequest](),
		"ExtendRequest":   reflect.TypeFor[wire.ExtendRequest](),
		"Power":           reflect.TypeFor[wire.Power](),
		"Holder":          reflect.TypeFor[wire.Holder](),
		"PowerAction":     reflect.TypeFor[wire.PowerRequest](),
		"Handover":        reflect.TypeFor[wire.Handover](),
		"Node":            reflect.TypeFor[inventory.Node](),
		"Tenant":          reflect.TypeFor[inventory.Tenant](),
		"AuditEntry":      reflect.TypeFor[audit.Entry](),
		"PassResult":      reflect.TypeFor[pass.Result](),
		"Pass":            reflect.TypeFor[pass.Record](),
		"PassHandover":    reflect.TypeFor[pass.Handover](),
		"StepRun":         reflect.TypeFor[pass.StepRun](),
		"BrokerPower":     reflect.TypeFor[brokerapi.Power](),
		"BrokerNode":      reflect.TypeFor[brokerapi.Lease](),
		"BootDevice":      reflect.TypeFor[brokerapi.BootRequest](),
		"Image":           reflect.TypeFor[m2.Image](),
		"Disk":            reflect.TypeFor[m2.Disk](),
		"Snapshot":        reflect.TypeFor[m2.Snapshot](),
		"Attachment":      reflect.TypeFor[m2.Attachment](),
		"TenantCreated":   reflect.TypeFor[wire.TenantCreated](),
		"TenantJob":       reflect.TypeFor[inventory.TenantJob](),
		"JobStep":         reflect.TypeFor[inventory.JobStep](),
		"OffboardOptions": reflect.TypeFor[inventory.OffboardOptions](),
		"ForemanLogin":    reflect.TypeFor[inventory.ForemanLogin](),
	}
	raw, err := os.ReadFile("api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for name, typ := range types {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s for %s", name, typ)
			continue
		}
		var documented []string
		for p := range s.Properties {
			documented = append(documented, p)
		}
		slices.Sort(documented)
		if got := jsonFields(typ); !slices.Equal(got, documented) {
			t.Errorf("schema %s documents %v; %s has %v", name, documented, typ, got)
		}
	}
	// Schemas not tied to a Go type: the error body (each API adds its
	// own fields to httpx's) and a name.
	for name := range doc.Components.Schemas {
		if _, ok := types[name]; !ok && name != "Error" && name != "Name" {
			t.Errorf("schema %s is checked against no Go type", name)
		}
	}
}
