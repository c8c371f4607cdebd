package foreman_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/foreman"
	"github.com/malleable-cloud/malleable/appliance/foreman/foremantest"
	"github.com/malleable-cloud/malleable/templates"
)

// seed is what the template database's Foreman starts with.
var seed = foremantest.Options{AdminPassword: "seed-admin-pw-0123", Organization: "Template Org", Location: "Template Loc"}

// want is what onboarding makes of it.
var want = foreman.Tenant{AdminPassword: "acme-admin-pw-4567", Organization: "acme", Location: "lab"}

// TestForeman runs one suite against the Foreman API fixture and against
// the kit's real Foreman 3.12 (started once, ~85 s), with the same
// assertions, so the fixture cannot drift from Foreman.
func TestForeman(t *testing.T) {
	for _, backend := range []string{"fixture", "real"} {
		t.Run(backend, func(t *testing.T) {
			proxy := startProxy(t)
			opts := seed
			opts.ClientCertPEM, opts.ClientKeyPEM, opts.ProxyCAPEM = proxy.ClientCert, proxy.ClientKey, proxy.CA
			var in *foremantest.Instance
			if backend == "real" {
				in = foremantest.StartReal(t, opts)
			} else {
				in = &foremantest.Start(t, opts).Instance
			}
			suite(t, in, proxy)
		})
	}
}

// step runs one step of the suite; a failed step ends the suite.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

func suite(t *testing.T, in *foremantest.Instance, proxy *proxyEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	c, err := foreman.New(foreman.Config{URL: in.URL, User: in.User, Password: in.Password, Timeout: 90 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	scope := foreman.Scope{Organization: want.Organization, Location: want.Location}

	step(t, "ready", func(t *testing.T) {
		if err := c.WaitReady(ctx, 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		st, err := c.Status(ctx)
		if err != nil || st.Version != "3.12.0" || st.APIVersion != 2 || st.Result != "ok" {
			t.Fatalf("status = %+v, %v; want 3.12.0, API 2, ok", st, err)
		}
		_, err = c.As(foreman.Credentials{User: "admin", Password: "wrong"}).Status(ctx)
		var ae *foreman.APIError
		if !errors.Is(err, foreman.ErrUnauthorized) || !errors.As(err, &ae) || ae.Status != 401 {
			t.Fatalf("status with a wrong password: %v, want 401 ErrUnauthorized", err)
		}
		t.Logf("401 answer: %s", ae.Body)
	})

	var admin *foreman.Client
	step(t, "personalise", func(t *testing.T) {
		admin, err = c.Personalise(ctx, foreman.Credentials{User: in.User, Password: in.Password}, want)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Status(ctx); err != nil {
			t.Fatalf("the new password is refused: %v", err)
		}
		if _, err := c.Status(ctx); !errors.Is(err, foreman.ErrUnauthorized) {
			t.Fatalf("the seed password still works: %v", err)
		}
		// A second run (the seed password is refused now) changes nothing.
		again, err := c.Personalise(ctx, foreman.Credentials{User: in.User, Password: in.Password}, want)
		if err != nil {
			t.Fatalf("personalise again: %v", err)
		}
		if again.Login() != admin.Login() {
			t.Fatalf("personalise again logged in as %+v", again.Login())
		}
		u, err := admin.FindUser(ctx, in.User)
		if err != nil || !u.Admin {
			t.Fatalf("find the admin: %+v, %v", u, err)
		}
		err = admin.ChangePassword(ctx, u.ID, "not-the-password", "whatever-0123")
		var ae *foreman.APIError
		if !errors.Is(err, foreman.ErrInvalid) || !errors.As(err, &ae) || !slices.Equal(ae.Messages, []string{"Current password Incorrect password"}) {
			t.Errorf("change the password with a wrong current one: %v, want 422 Current password Incorrect password", err)
		}
		for kind, name := range map[foreman.Taxonomy]string{foreman.Organizations: want.Organization, foreman.Locations: want.Location} {
			all, err := admin.Taxonomies(ctx, kind)
			if err != nil || len(all) != 1 || all[0].Name != name {
				t.Errorf("%s = %+v, %v; want only %q (renamed)", kind, all, err, name)
			}
		}
		for name, v := range map[string]string{"default_organization": want.Organization, "default_location": want.Location} {
			s, err := admin.Setting(ctx, name)
			if err != nil || s.Value != v {
				t.Errorf("setting %s = %+v, %v; want %q", name, s, err, v)
			}
		}
	})

	step(t, "422 verbatim", func(t *testing.T) {
		_, err := admin.CreateTaxonomy(ctx, foreman.Organizations, want.Organization)
		var ae *foreman.APIError
		if !errors.Is(err, foreman.ErrInvalid) || !errors.As(err, &ae) {
			t.Fatalf("a second organization %q: %v, want a 422", want.Organization, err)
		}
		if !slices.Equal(ae.Messages, []string{"Name has already been taken"}) || !strings.Contains(err.Error(), "Name has already been taken") {
			t.Errorf("messages = %q (error %q), want Foreman's full_messages", ae.Messages, err)
		}
		t.Logf("422 answer: %s", ae.Body)

		_, err = admin.Host(ctx, 999999)
		if !errors.Is(err, foreman.ErrNotFound) || !errors.As(err, &ae) ||
			!slices.Equal(ae.Messages, []string{"Resource host not found by id '999999'"}) {
			t.Errorf("read a host that does not exist: %v, want 404 with Foreman's message", err)
		}
		// Before any BMC proxy, Foreman cannot read a host's power: 200 "na".
		early := foreman.HostSpec{Name: "early-1", MAC: "52:54:00:fe:00:09", BMCAddress: netip.MustParseAddr("198.18.0.9"),
			BMCUser: tenant, BMCPassword: "x", Org: want.Organization, Loc: want.Location}
		h, err := admin.EnsureHost(ctx, early)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := admin.Power(ctx, h.ID); st != "na" || !errors.Is(err, foreman.ErrNoPower) || !strings.Contains(err.Error(), "There is no proxy with BMC feature set up") {
			t.Errorf("power without a BMC proxy = %q, %v; want na, ErrNoPower with Foreman's reason", st, err)
		}
		if err := admin.RemoveHost(ctx, "early-1"); err != nil {
			t.Fatal(err)
		}
		// Search is exact and case-sensitive.
		if _, err := admin.FindTaxonomy(ctx, foreman.Organizations, strings.ToUpper(want.Organization)); !errors.Is(err, foreman.ErrNotFound) {
			t.Errorf("find %q: %v, want ErrNotFound", strings.ToUpper(want.Organization), err)
		}
	})

	var sp foreman.SmartProxy
	step(t, "register the smart-proxy over mTLS", func(t *testing.T) {
		start := time.Now()
		sp, err = admin.RegisterProxy(ctx, "malleable-acme", proxy.URL, scope)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("registered in %s: %+v", time.Since(start).Round(time.Millisecond), sp)
		again, err := admin.RegisterProxy(ctx, "malleable-acme", proxy.URL+"/", scope)
		if err != nil || again.ID != sp.ID || !again.Has("BMC") {
			t.Fatalf("register again = %+v, %v; want the same proxy (id %d) refreshed", again, err, sp.ID)
		}
		// A proxy nobody answers at: Foreman refuses it with its reason.
		hostPort := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		_, err = admin.RegisterProxy(ctx, "nowhere", "https://"+hostPort, scope)
		var ae *foreman.APIError
		wantMsgs := []string{"Unable to communicate with the proxy: ERF12-2530 [ProxyAPI::ProxyException]: Unable to detect features " +
			"([Errno::ECONNREFUSED]: Failed to open TCP connection to " + hostPort + " (Connection refused - connect(2) for " + hostPort + ")) " +
			"for proxy https://" + hostPort + "/v2/features", "Please check the proxy is configured and running on the host."}
		if !errors.Is(err, foreman.ErrInvalid) || !errors.As(err, &ae) || !slices.Equal(ae.Messages, wantMsgs) {
			t.Fatalf("register an unreachable proxy: %v\nwant 422 %q", err, wantMsgs)
		}
		if _, err := admin.FindSmartProxy(ctx, "nowhere"); !errors.Is(err, foreman.ErrNotFound) {
			t.Errorf("the refused proxy was saved: %v", err)
		}
		// A proxy that does not trust Foreman's certificate's CN answers
		// /v2/features 403: Foreman refuses it too.
		untrusting := proxy.startUntrusting(t)
		_, err = admin.RegisterProxy(ctx, "untrusting", untrusting, scope)
		wantMsgs = []string{"Unable to communicate with the proxy: ERF12-2530 [ProxyAPI::ProxyException]: Unable to detect features " +
			"([RestClient::Forbidden]: 403 Forbidden) for proxy " + untrusting + "/v2/features", "Please check the proxy is configured and running on the host."}
		if !errors.Is(err, foreman.ErrInvalid) || !errors.As(err, &ae) || !slices.Equal(ae.Messages, wantMsgs) {
			t.Errorf("register a proxy that does not trust Foreman: %v\nwant 422 %q", err, wantMsgs)
		}
		t.Logf("unreachable proxy: %q", ae.Messages)
	})

	var subnet foreman.Subnet
	bmcRange := netip.MustParsePrefix("198.18.0.0/15")
	step(t, "BMC subnet", func(t *testing.T) {
		spec := foreman.BMCSubnet{Name: "acme-bmc", Range: bmcRange, Proxy: "malleable-acme", Scope: scope}
		subnet, err = admin.EnsureBMCSubnet(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if subnet.BMCID != sp.ID || subnet.Network != "198.18.0.0" || subnet.Mask != "255.254.0.0" {
			t.Fatalf("subnet = %+v; want 198.18.0.0/255.254.0.0 with BMC proxy %d", subnet, sp.ID)
		}
		again, err := admin.EnsureBMCSubnet(ctx, spec)
		if err != nil || again.ID != subnet.ID {
			t.Fatalf("ensure again = %+v, %v; want the same subnet %d", again, err, subnet.ID)
		}
	})

	hostSpec := foreman.HostSpec{Name: "rack-1", MAC: "52:54:00:FE:00:01", BMCAddress: nodeBMC, BMCUser: tenant,
		BMCPassword: proxy.BMCPassword, Org: want.Organization, Loc: want.Location, Subnet: "acme-bmc"}
	var host foreman.Host
	step(t, "host with a BMC interface", func(t *testing.T) {
		host, err = admin.EnsureHost(ctx, hostSpec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := admin.FindHost(ctx, "rack-1")
		if err != nil {
			t.Fatal(err)
		}
		b, ok := got.BMC()
		p, okp := got.PrimaryInterface()
		if !ok || !okp || b.IP != nodeBMC.String() || b.Provider != "IPMI" || b.Username != tenant || b.SubnetID != subnet.ID ||
			p.MAC != "52:54:00:fe:00:01" || len(got.Interfaces) != 2 {
			t.Fatalf("host = %+v; want a primary NIC 52:54:00:fe:00:01 and an IPMI BMC at %s in subnet %d", got, nodeBMC, subnet.ID)
		}
		again, err := admin.EnsureHost(ctx, hostSpec)
		if err != nil {
			t.Fatal(err)
		}
		got2, err := admin.Host(ctx, again.ID)
		if err != nil || again.ID != host.ID || len(got2.Interfaces) != 2 {
			t.Fatalf("ensure again = %+v, %v; want host %d with its 2 interfaces", got2, err, host.ID)
		}
		for i := range got.Interfaces {
			if got2.Interfaces[i].ID != got.Interfaces[i].ID {
				t.Errorf("interface ids changed: %+v -> %+v", got.Interfaces, got2.Interfaces)
			}
		}
	})

	step(t, "concurrent reads", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 4 {
			wg.Go(func() {
				if _, err := admin.FindHost(ctx, "rack-1"); err != nil {
					errs <- err
				}
				if _, err := admin.Status(ctx); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	step(t, "power through the smart-proxy", func(t *testing.T) {
		if st, err := admin.Power(ctx, host.ID); err != nil || st != "off" {
			t.Fatalf("power = %q, %v; want off", st, err)
		}
		if err := admin.SetPower(ctx, host.ID, "on"); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := proxy.Sim.WaitPower(wctx, true); err != nil {
			t.Fatalf("the BMC never powered on: %v", err)
		}
		if st, err := admin.Power(ctx, host.ID); err != nil || st != "on" {
			t.Fatalf("power = %q, %v; want on", st, err)
		}
		if err := admin.SetPower(ctx, host.ID, "off"); err != nil {
			t.Fatal(err)
		}
		if err := proxy.Sim.WaitPower(wctx, false); err != nil {
			t.Fatalf("the BMC never powered off: %v", err)
		}
		if err := admin.SetPower(ctx, host.ID, "explode"); err == nil {
			t.Fatal("an unknown power action was sent")
		}
	})

	step(t, "template", func(t *testing.T) {
		body := templates.ForemanSANBoot()
		tp, err := admin.EnsureTemplate(ctx, "M2 SAN boot iPXE", body, scope)
		if err != nil {
			t.Fatal(err)
		}
		again, err := admin.EnsureTemplate(ctx, "M2 SAN boot iPXE", body, scope)
		if err != nil || again.ID != tp.ID {
			t.Fatalf("ensure again = %+v, %v; want template %d", again, err, tp.ID)
		}
		changed := body + "\n# changed\n"
		if _, err := admin.EnsureTemplate(ctx, "M2 SAN boot iPXE", changed, scope); err != nil {
			t.Fatal(err)
		}
		got, err := admin.FindTemplate(ctx, "M2 SAN boot iPXE")
		kind, kerr := admin.TemplateKind(ctx, "iPXE")
		if err != nil || kerr != nil || got.ID != tp.ID || got.Template != changed || got.TemplateKindID != kind.ID {
			t.Fatalf("template = %+v, %v, %v; want id %d of kind iPXE with the new body", got, err, kerr, tp.ID)
		}
	})

	step(t, "remove the host", func(t *testing.T) {
		if err := admin.RemoveHost(ctx, "rack-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.FindHost(ctx, "rack-1"); !errors.Is(err, foreman.ErrNotFound) {
			t.Fatalf("find the removed host: %v, want ErrNotFound", err)
		}
		if err := admin.RemoveHost(ctx, "rack-1"); err != nil {
			t.Fatalf("remove again: %v", err)
		}
		if _, err := admin.Host(ctx, host.ID); !errors.Is(err, foreman.ErrNotFound) {
			t.Fatalf("read the removed host: %v, want a 404", err)
		}
	})
}
