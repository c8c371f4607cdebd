package tenants

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/malleable-cloud/malleable/appliance/foreman"
)

// ForemanClient returns the ForemanAPI of a tenant's Foreman at url,
// logged in as user: the Plan's Foreman field on a real appliance.
func ForemanClient(timeout time.Duration, log *slog.Logger) func(url, user, password string) (ForemanAPI, error) {
	return func(url, user, password string) (ForemanAPI, error) {
		c, err := foreman.New(foreman.Config{URL: url, User: user, Password: password, Timeout: timeout, Logger: log})
		if err != nil {
			return nil, err
		}
		return &foremanAPI{c: c}, nil
	}
}

// foremanAPI is ForemanAPI over appliance/foreman's client.
type foremanAPI struct{ c *foreman.Client }

// readyPoll is how often WaitReady asks a starting Foreman.
const readyPoll = 2 * time.Second

func (f *foremanAPI) WaitReady(ctx context.Context) error { return f.c.WaitReady(ctx, readyPoll) }

func (f *foremanAPI) Personalise(ctx context.Context, seedUser, seedPassword, password, org, loc string) error {
	c, err := f.c.Personalise(ctx, foreman.Credentials{User: seedUser, Password: seedPassword},
		foreman.Tenant{AdminPassword: password, Organization: org, Location: loc})
	if err != nil {
		return err
	}
	f.c = c
	return nil
}

func (f *foremanAPI) RegisterProxy(ctx context.Context, name, url, org, loc string) error {
	_, err := f.c.RegisterProxy(ctx, name, url, foreman.Scope{Organization: org, Location: loc})
	return err
}

func (f *foremanAPI) EnsureBMCSubnet(ctx context.Context, name string, network netip.Prefix, proxy, org, loc string) error {
	_, err := f.c.EnsureBMCSubnet(ctx, foreman.BMCSubnet{Name: name, Range: network, Proxy: proxy,
		Scope: foreman.Scope{Organization: org, Location: loc}})
	return err
}

func (f *foremanAPI) EnsureHost(ctx context.Context, h Host, subnet, org, loc string) error {
	_, err := f.c.EnsureHost(ctx, foreman.HostSpec{Name: h.Name, MAC: h.MAC, BMCAddress: h.BMCAddress,
		BMCUser: h.BMCUser, BMCPassword: h.BMCPassword, Org: org, Loc: loc, Subnet: subnet})
	return err
}

func (f *foremanAPI) RemoveHost(ctx context.Context, name string) error {
	return f.c.RemoveHost(ctx, name)
}

func (f *foremanAPI) EnsureTemplate(ctx context.Context, name, body, org, loc string) error {
	_, err := f.c.EnsureTemplate(ctx, name, body, foreman.Scope{Organization: org, Location: loc})
	return err
}
