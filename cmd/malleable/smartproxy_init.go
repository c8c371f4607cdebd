package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/smartproxy"
)

const smartProxyInitUsage = `smart-proxy init --dir DIR --tenant NAME [--listen :8443] [--host NAME,...] [--foreman-cn CN] [--broker-url URL] [--force]`

// cmdSmartProxyInit is `malleable smart-proxy init`: with the admin
// credentials every admin command finds, it fetches the tenant's broker
// token from the running appliance (replacing any earlier one) and writes
// a ready proxy directory. Nothing secret is printed.
func cmdSmartProxyInit(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e.stderr, "smart-proxy init", smartProxyInitUsage)
	var c conn
	c.register(fs, e)
	dir := fs.String("dir", "", "directory to write (created with mode 0700)")
	tenant := fs.String("tenant", "", "the tenant whose proxy this is; also its virtual BMC username")
	listen := fs.String("listen", ":8443", "HTTPS address Foreman calls ([smart_proxy] https_listen)")
	hostname, _ := os.Hostname()
	hosts := fs.String("host", strings.Join(nonEmpty(hostname, "localhost", "127.0.0.1"), ","),
		"comma-separated names and addresses Foreman calls the proxy by (the server certificate's SANs; the first is its CN)")
	foremanCN := fs.String("foreman-cn", "", "CN of the client certificate issued to the tenant's Foreman (default foreman.TENANT)")
	brokerURL := fs.String("broker-url", "", "the appliance's URL as the proxy reaches it (default: --server)")
	force := fs.Bool("force", false, "replace the files of an earlier init")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("smart-proxy init takes no arguments, got %q", pos)
	}
	if *dir == "" || *tenant == "" {
		return usagef("smart-proxy init: --dir and --tenant are required\nUsage: malleable %s", smartProxyInitUsage)
	}
	if *foremanCN == "" {
		*foremanCN = "foreman." + *tenant
	}
	cl, err := c.client(e)
	if err != nil {
		return err
	}
	if *brokerURL == "" {
		*brokerURL = c.server
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cl.Tenant(ctx, *tenant); err != nil {
		return explain(c.server, err)
	}
	spec := smartproxy.InitSpec{Dir: *dir, Tenant: *tenant, BrokerURL: *brokerURL, Listen: *listen,
		Hosts: nonEmpty(strings.Split(*hosts, ",")...), ForemanCN: *foremanCN, Force: *force, Now: time.Now()}
	// Refuse before the token is rotated, not after.
	if !*force {
		if err := smartproxy.InitDirFree(*dir); err != nil {
			return err
		}
	}
	if spec.BrokerToken, err = cl.TenantToken(ctx, *tenant); err != nil {
		return explain(c.server, err)
	}
	cfg, err := smartproxy.WriteInit(spec)
	if errors.Is(err, smartproxy.ErrExists) {
		return err
	} else if err != nil {
		return fmt.Errorf("smart-proxy init: %w (the tenant's new token is not saved: run init again)", err)
	}
	abs, _ := filepath.Abs(*dir)
	in := func(name string) string { return filepath.Join(abs, name) }
	fmt.Fprintf(e.stdout, `smart-proxy for tenant %s written to %s (any earlier broker token of %s no longer works):
  config            %s
  broker token      %s (0600)
  BMC password      %s (0600; with username %s, what Foreman stores on each host's BMC interface)
  proxy TLS         %s, %s (0600) for %s
  CA                %s
  Foreman's client  %s, %s (0600), CN %s
For the tenant's Foreman: ssl_ca_file = ca.crt, ssl_certificate = foreman.crt, ssl_priv_key = foreman.key.
Run it:  malleable smart-proxy --config %s
`, *tenant, abs, *tenant, in("smartproxy.ini"), in("broker.token"), in("bmc.password"), cfg.BMC.Username,
		in("proxy.crt"), in("proxy.key"), strings.Join(spec.Hosts, ", "), in("ca.crt"),
		in("foreman.crt"), in("foreman.key"), cfg.Proxy.TrustedHosts, in("smartproxy.ini"))
	return nil
}

// nonEmpty returns the trimmed, non-empty strings of ss.
func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
