package foreman

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestAPIErrorShapes decodes each error shape Foreman answers into the
// messages an admin sees, and the sentinel callers branch on.
func TestAPIErrorShapes(t *testing.T) {
	tests := map[string]struct {
		status   int
		body     string
		messages []string
		is       error
	}{
		"422 full_messages": {422, `{"error":{"id":null,"errors":{"name":["has already been taken"]},"full_messages":["Name has already been taken","Url is invalid"]}}`,
			[]string{"Name has already been taken", "Url is invalid"}, ErrInvalid},
		"401":            {401, `{"error":{"message":"Unable to authenticate user admin"}}`, []string{"Unable to authenticate user admin"}, ErrUnauthorized},
		"403 details":    {403, `{"error":{"message":"Access denied","details":"Missing one of the required permissions: view_hosts"}}`, []string{"Access denied", "Missing one of the required permissions: view_hosts"}, ErrForbidden},
		"404":            {404, `{"error":{"message":"Resource host not found by id '9'"}}`, []string{"Resource host not found by id '9'"}, ErrNotFound},
		"400 unwrapped":  {400, `{"status":400,"error":"There was a problem in the JSON you submitted: unexpected token"}`, []string{"There was a problem in the JSON you submitted: unexpected token"}, nil},
		"500 plain text": {500, "boom", []string{"boom"}, nil},
		"502 html":       {502, "<html>bad gateway</html>", nil, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c, err := New(Config{URL: srv.URL, User: "admin", Password: "x"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Status(context.Background())
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tc.status || !slices.Equal(ae.Messages, tc.messages) || string(ae.Body) != tc.body {
				t.Fatalf("err = %#v, want status %d messages %q", err, tc.status, tc.messages)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			for _, s := range []error{ErrInvalid, ErrUnauthorized, ErrForbidden, ErrNotFound} {
				if s != tc.is && errors.Is(err, s) {
					t.Errorf("%v is also %v", err, s)
				}
			}
		})
	}
}

// TestBadInputCallsNothing: input Malleable never produces is refused with
// a clear error before any request.
func TestBadInputCallsNothing(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++ }))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL, User: "admin", Password: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := HostSpec{Name: "rack-1", MAC: "52:54:00:fe:00:01", BMCAddress: netip.MustParseAddr("198.18.0.7"), BMCUser: "acme", BMCPassword: "pw"}
	tests := map[string]struct {
		call func() error
		want string
	}{
		"host name with a slash": {func() error { h := good; h.Name = "../x"; _, err := c.EnsureHost(ctx, h); return err }, "host name"},
		"host name upper case":   {func() error { h := good; h.Name = "Rack"; _, err := c.EnsureHost(ctx, h); return err }, "host name"},
		"bad MAC":                {func() error { h := good; h.MAC = "52:54:00"; _, err := c.EnsureHost(ctx, h); return err }, "MAC"},
		"IPv6 BMC": {func() error {
			h := good
			h.BMCAddress = netip.MustParseAddr("::1")
			_, err := c.EnsureHost(ctx, h)
			return err
		}, "not IPv4"},
		"no BMC password":       {func() error { h := good; h.BMCPassword = ""; _, err := c.EnsureHost(ctx, h); return err }, "password"},
		"remove a bad name":     {func() error { return c.RemoveHost(ctx, "a b") }, "host name"},
		"proxy name with quote": {func() error { _, err := c.RegisterProxy(ctx, `x"y`, "https://p:8443", Scope{}); return err }, "smart-proxy name"},
		"proxy url no scheme":   {func() error { _, err := c.RegisterProxy(ctx, "p", "p:8443", Scope{}); return err }, "want https://"},
		"subnet name empty":     {func() error { _, err := c.EnsureBMCSubnet(ctx, BMCSubnet{Proxy: "p"}); return err }, "subnet name"},
		"template name newline": {func() error { _, err := c.EnsureTemplate(ctx, "a\nb", "x", Scope{}); return err }, "template name"},
		"personalise no password": {func() error {
			_, err := c.Personalise(ctx, Credentials{"admin", "x"}, Tenant{Organization: "o", Location: "l"})
			return err
		}, "empty admin password"},
		"personalise bad org": {func() error {
			_, err := c.Personalise(ctx, Credentials{"admin", "x"}, Tenant{AdminPassword: "p", Organization: " o", Location: "l"})
			return err
		}, "organization name"},
		"unknown power action": {func() error { return c.SetPower(ctx, 1, "explode") }, "power action"},
		"setting name path":    {func() error { return c.SetSetting(ctx, "../users", "x") }, "setting name"},
		"setting name read":    {func() error { _, err := c.Setting(ctx, "a/b"); return err }, "setting name"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := tc.call(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if calls != 0 {
		t.Errorf("bad input made %d requests", calls)
	}
}

// TestSubnetSpecMask: a prefix becomes Foreman's network and mask.
func TestSubnetSpecMask(t *testing.T) {
	for in, want := range map[string]string{"198.18.0.0/15": "255.254.0.0", "10.0.0.0/8": "255.0.0.0", "192.0.2.0/24": "255.255.255.0", "192.0.2.4/30": "255.255.255.252"} {
		a, err := SubnetSpec{Name: "s", Range: netip.MustParsePrefix(in)}.attrs()
		if err != nil || a["mask"] != want || a["network"] != strings.Split(in, "/")[0] {
			t.Errorf("%s: %v, %v; want mask %s", in, a, err, want)
		}
	}
	for _, bad := range []string{"198.18.0.1/15", "2001:db8::/64"} {
		if _, err := (SubnetSpec{Name: "s", Range: netip.MustParsePrefix(bad)}).attrs(); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestNewRefusesBadConfig: a bad URL or CA is an error, not a client.
func TestNewRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no scheme": {URL: "foreman:3000", User: "admin"},
		"ftp":       {URL: "ftp://foreman", User: "admin"},
		"no user":   {URL: "https://foreman"},
		"bad CA":    {URL: "https://foreman", User: "admin", CAPEM: []byte("not a cert")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
