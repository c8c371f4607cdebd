package smartproxy

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenCase is one request as Foreman's ProxyAPI classes send it
// (theforeman/foreman app/services/proxy_api/{bmc,features,v2/features,
// version}.rb), and the commands it may let reach a BMC.
type goldenCase struct {
	client string // foreman (default), nocert, untrusted
	method string
	path   string
	body   string // form-encoded unless ct says otherwise
	ct     string
	login  string // "" the tenant's BMC identity, "none", "wrong", or a raw Authorization header
	acts   []string
}

// goldenCases are named like their golden files.
var goldenCases = map[string]goldenCase{
	// Root module: ProxyAPI::Features, ::V2::Features, ::Version.
	"features":              {method: "GET", path: "/features", client: "nocert"},
	"version":               {method: "GET", path: "/version", client: "nocert"},
	"v2_features":           {method: "GET", path: "/v2/features"},
	"v2_features_nocert":    {method: "GET", path: "/v2/features", client: "nocert"},
	"v2_features_untrusted": {method: "GET", path: "/v2/features", client: "untrusted"},
	"unknown_path":          {method: "GET", path: "/puppet/environments"},

	// ProxyAPI::BMC#power(action: 'status' | 'on?' | 'off?').
	"power_status_on":             {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status"},
	"power_status_off":            {method: "GET", path: "/bmc/10.0.0.6/chassis/power/status"},
	"power_status_not_held":       {method: "GET", path: "/bmc/10.0.0.7/chassis/power/status"},
	"power_status_unknown_node":   {method: "GET", path: "/bmc/10.0.0.99/chassis/power/status"},
	"power_status_by_node_name":   {method: "GET", path: "/bmc/node-1/chassis/power/status"},
	"power_status_redfish":        {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status?bmc_provider=Redfish"},
	"power_status_broker_fails":   {method: "GET", path: "/bmc/10.0.0.9/chassis/power/status"},
	"power_status_broker_hangs":   {method: "GET", path: "/bmc/10.0.0.10/chassis/power/status"},
	"power_on_query":              {method: "GET", path: "/bmc/10.0.0.5/chassis/power/on"},
	"power_off_query":             {method: "GET", path: "/bmc/10.0.0.5/chassis/power/off"},
	"power_off_query_not_held":    {method: "GET", path: "/bmc/10.0.0.7/chassis/power/off"},
	"power_status_no_login":       {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status", login: "none"},
	"power_status_not_basic":      {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status", login: "Bearer abc"},
	"power_status_wrong_login":    {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status", login: "wrong"},
	"power_status_invalid":        {method: "GET", path: "/bmc/10.0.0.5/chassis/power/bogus"},
	"power_status_no_cert":        {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status", client: "nocert"},
	"power_status_untrusted":      {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status", client: "untrusted"},
	"power_status_html_untrusted": {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status", client: "untrusted", ct: "accept-html"},

	// ProxyAPI::BMC#power(action: 'on' | 'off' | 'cycle' | 'soft'): PUT, form body.
	"power_on":                {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/on", body: "action=on", acts: []string{"node-2 on"}},
	"power_off":               {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/off", body: "action=off", acts: []string{"node-2 off"}},
	"power_cycle":             {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/cycle", body: "action=cycle", acts: []string{"node-2 cycle"}},
	"power_soft":              {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/soft", body: "action=soft", acts: []string{"node-2 soft"}},
	"power_reset":             {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/reset", body: "action=reset", acts: []string{"node-2 reset"}},
	"power_on_redfish":        {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/on", body: "action=on&bmc_provider=Redfish", acts: []string{"node-2 on"}},
	"power_on_not_held":       {method: "PUT", path: "/bmc/10.0.0.7/chassis/power/on", body: "action=on"},
	"power_on_no_lease_ahead": {method: "PUT", path: "/bmc/10.0.0.8/chassis/power/on", body: "action=on"},
	"power_on_unknown_node":   {method: "PUT", path: "/bmc/10.0.0.99/chassis/power/on", body: "action=on"},
	"power_on_broker_fails":   {method: "PUT", path: "/bmc/10.0.0.9/chassis/power/on", body: "action=on"},
	"power_on_no_login":       {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/on", body: "action=on", login: "none"},
	"power_on_wrong_login":    {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/on", body: "action=on", login: "wrong"},
	"power_invalid_action":    {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/reboot", body: "action=reboot"},
	"power_put_hint":          {method: "PUT", path: "/bmc/10.0.0.6/chassis/power", login: "none"},
	"power_get_hint":          {method: "GET", path: "/bmc/10.0.0.6/chassis/power/", login: "none"},
	"power_json_body_bad":     {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/on", body: "{", ct: "application/json"},
	"power_json_body_array":   {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/on", body: "[1]", ct: "application/json"},
	"power_json_body":         {method: "PUT", path: "/bmc/10.0.0.6/chassis/power/on", body: `{"bmc_provider":"ipmitool","options":{"privilege":"OPERATOR"}}`, ct: "application/json", acts: []string{"node-2 on"}},

	// ProxyAPI::BMC#boot(function: 'bootdevice', device: d): PUT /api/hosts/:id/boot.
	"boot_pxe":          {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/pxe", body: "function=bootdevice&device=pxe", acts: []string{"node-1 boot pxe persistent=false"}},
	"boot_disk":         {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/disk", body: "function=bootdevice&device=disk", acts: []string{"node-1 boot disk persistent=false"}},
	"boot_bios":         {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/bios", body: "function=bootdevice&device=bios", acts: []string{"node-1 boot bios persistent=false"}},
	"boot_cdrom":        {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/cdrom", body: "function=bootdevice&device=cdrom", acts: []string{"node-1 boot cdrom persistent=false"}},
	"boot_pxe_reboot":   {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/pxe", body: "persistent=true&reboot=true", acts: []string{"node-1 boot pxe persistent=true", "node-1 cycle"}},
	"boot_not_held":     {method: "PUT", path: "/bmc/10.0.0.7/chassis/config/bootdevice/pxe", body: "function=bootdevice&device=pxe"},
	"boot_invalid":      {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/floppy", body: "function=bootdevice&device=floppy"},
	"boot_options":      {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice"},
	"boot_devices":      {method: "GET", path: "/bmc/10.0.0.5/chassis/config/bootdevices"},
	"config_invalid":    {method: "GET", path: "/bmc/10.0.0.5/chassis/config/bogus"},
	"boot_no_login":     {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/pxe", body: "function=bootdevice&device=pxe", login: "none"},
	"boot_wrong_login":  {method: "PUT", path: "/bmc/10.0.0.5/chassis/config/bootdevice/pxe", body: "function=bootdevice&device=pxe", login: "wrong"},
	"boot_broker_fails": {method: "PUT", path: "/bmc/10.0.0.9/chassis/config/bootdevice/pxe", body: "function=bootdevice&device=pxe"},

	// ProxyAPI::BMC#lan(action: ip | netmask | mac | gateway): the host's BMC tab.
	"lan_ip":          {method: "GET", path: "/bmc/10.0.0.5/lan/ip"},
	"lan_netmask":     {method: "GET", path: "/bmc/10.0.0.5/lan/netmask"},
	"lan_mac":         {method: "GET", path: "/bmc/10.0.0.5/lan/mac"},
	"lan_gateway":     {method: "GET", path: "/bmc/10.0.0.5/lan/gateway"},
	"lan_ip_wrong":    {method: "GET", path: "/bmc/10.0.0.5/lan/ip", login: "wrong"},
	"lan_vlanid":      {method: "GET", path: "/bmc/10.0.0.5/lan/vlanid"},
	"lan_hint":        {method: "GET", path: "/bmc/10.0.0.5/lan", login: "none"},
	"identify_status": {method: "GET", path: "/bmc/10.0.0.5/chassis/identify/status"},
	"identify_bogus":  {method: "PUT", path: "/bmc/10.0.0.5/chassis/identify/bogus"},

	// The rest of the module's routes.
	"bmc_resources":     {method: "GET", path: "/bmc", login: "none"},
	"bmc_providers":     {method: "GET", path: "/bmc/providers", login: "none"},
	"bmc_host_message":  {method: "GET", path: "/bmc/host", login: "none"},
	"bmc_host_actions":  {method: "GET", path: "/bmc/10.0.0.5", login: "none"},
	"bmc_chassis":       {method: "GET", path: "/bmc/10.0.0.5/chassis", login: "none"},
	"bmc_test":          {method: "GET", path: "/bmc/10.0.0.5/test"},
	"bmc_test_unknown":  {method: "GET", path: "/bmc/10.0.0.99/test"},
	"bmc_test_wrong":    {method: "GET", path: "/bmc/10.0.0.5/test", login: "wrong"},
	"bmc_unknown_route": {method: "GET", path: "/bmc/10.0.0.5/chassis/power/status/extra"},
	"bmc_wrong_method":  {method: "POST", path: "/bmc/10.0.0.5/chassis/power/on", body: "action=on"},
	"fru_list":          {method: "GET", path: "/bmc/10.0.0.5/fru/list"},
}

// TestGolden replays Foreman's requests over real TLS and compares status,
// Content-Type and body with testdata/<name>.golden, which hold what the
// Ruby smart-proxy answers. go test -run TestGolden -update rewrites them.
func TestGolden(t *testing.T) {
	h := newHarness(t, nil)
	clients := map[string]*http.Client{
		"":          h.foreman,
		"nocert":    h.ca.Client(),
		"untrusted": h.ca.Client(h.ca.ClientCert(t, "foreman.globex.example", proxytest.ForemanCN)), // a trusted SAN is not enough
	}
	names := make([]string, 0, len(goldenCases))
	for name := range goldenCases {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		c := goldenCases[name]
		t.Run(name, func(t *testing.T) {
			req := proxytest.ForemanRequest(h.ts.URL, c.method, c.path, c.body)
			switch c.ct {
			case "", "accept-html":
			default:
				req.Header.Set("Content-Type", c.ct)
			}
			if c.ct == "accept-html" {
				req.Header.Set("Accept", "text/html")
			}
			switch c.login {
			case "":
				req.SetBasicAuth(bmcUser, proxytest.BMCPassword)
			case "none":
			case "wrong":
				req.SetBasicAuth(bmcUser, "guess")
			default:
				req.Header.Set("Authorization", c.login)
			}
			status, ct, body := proxytest.Do(t, clients[c.client], req)
			got := fmt.Sprintf("%s %s\nHTTP %d\nContent-Type: %s\n\n%s", c.method, c.path, status, ct, body)
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("answer differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
			}
			if acts := h.broker.takeActs(); !slices.Equal(acts, c.acts) {
				t.Errorf("commands that reached the BMC = %q, want %q", acts, c.acts)
			}
		})
	}
}

// TestGoldenFilesAreUsed keeps testdata free of golden files no case writes.
func TestGoldenFilesAreUsed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := goldenCases[strings.TrimSuffix(filepath.Base(f), ".golden")]; !ok {
			t.Errorf("%s has no case in goldenCases", f)
		}
	}
}
