// Package foreman is the appliance's client of a tenant's Foreman API v2:
// HTTP Basic over HTTPS (or loopback HTTP in tests), JSON bodies wrapped in
// the resource's singular name, a deadline on every call, and the
// idempotent steps tenant onboarding takes (Personalise, RegisterProxy,
// EnsureBMCSubnet, EnsureHost, RemoveHost, EnsureTemplate).
package foreman

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// DefaultTimeout bounds one API call when Config.Timeout is zero. Smart
// proxy registration makes Foreman call the proxy (its own timeout is 60 s).
const DefaultTimeout = 90 * time.Second

// Config is how to reach one Foreman as one user.
type Config struct {
	// URL is Foreman's root, e.g. https://foreman.acme:443 (no /api).
	URL string
	// User and Password are the API login (HTTP Basic).
	User, Password string
	// CAPEM, when set, is the only trust for Foreman's server certificate.
	CAPEM []byte
	// Timeout bounds each call; DefaultTimeout when zero.
	Timeout time.Duration
	// Logger receives progress (WaitReady) and the steps' decisions.
	Logger *slog.Logger
}

// Credentials are a Foreman login.
type Credentials struct {
	User, Password string
}

// Client calls one Foreman's API v2 as one user. It is safe for concurrent
// use and holds no mutable state.
type Client struct {
	cfg    Config
	caller *httpx.Caller
	log    *slog.Logger
}

// New returns a client for cfg. It checks the URL and the CA but calls
// nothing.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("foreman url %q: want http(s)://host[:port]", cfg.URL)
	}
	if cfg.User == "" {
		return nil, errors.New("foreman: no user")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if len(cfg.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("foreman: CAPEM holds no certificate")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	base := strings.TrimRight(cfg.URL, "/")
	return &Client{cfg: cfg, log: cfg.Logger.With("foreman", base),
		caller: &httpx.Caller{Base: base, HTTP: &http.Client{Transport: tr}}}, nil
}

// As returns a client of the same Foreman logged in as who.
func (c *Client) As(who Credentials) *Client {
	cc := *c
	cc.cfg.User, cc.cfg.Password = who.User, who.Password
	return &cc
}

// Login returns the credentials the client calls with.
func (c *Client) Login() Credentials { return Credentials{c.cfg.User, c.cfg.Password} }

// call sends in (when not nil; POST and PUT always carry a JSON body, as
// Foreman answers 415 without Content-Type: application/json) and decodes
// the answer into out (when not nil), within the client's timeout.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if in == nil && (method == http.MethodPost || method == http.MethodPut) {
		in = struct{}{}
	}
	var body io.Reader
	var err error
	if in != nil {
		if body, err = jsonBody(in); err != nil {
			return fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
	}
	req, err := c.caller.NewRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.cfg.User, c.cfg.Password)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if _, err := c.caller.Send(req, out); err != nil {
		return apiError(method, path, err)
	}
	return nil
}

// Ping asks GET /api/v2/ping (no login); nil once Foreman answers 200.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := c.caller.NewRequest(ctx, http.MethodGet, "/api/v2/ping", nil)
	if err != nil {
		return err
	}
	if _, err := c.caller.Send(req, nil); err != nil {
		return apiError(http.MethodGet, "/api/v2/ping", err)
	}
	return nil
}

// WaitReady pings every poll until Foreman answers or ctx ends, logging
// progress every ten attempts. A cold Foreman (migrate, seed, puma) takes
// 76–94 s; the server alone on a template database about 25 s.
func (c *Client) WaitReady(ctx context.Context, poll time.Duration) error {
	start := time.Now()
	t := time.NewTicker(poll)
	defer t.Stop()
	for n := 1; ; n++ {
		pctx, cancel := context.WithTimeout(ctx, max(poll, 5*time.Second))
		err := c.Ping(pctx)
		cancel()
		if err == nil {
			c.log.Info("foreman ready", "after", time.Since(start).Round(time.Millisecond), "attempts", n)
			return nil
		}
		if n%10 == 0 {
			c.log.Info("waiting for foreman", "waited", time.Since(start).Round(time.Second), "last_error", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for foreman: %w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Status is GET /api/status.
type Status struct {
	Result     string `json:"result"`
	Version    string `json:"version"`
	APIVersion int    `json:"api_version"`
}

// Status asks GET /api/status, which needs a valid login.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.call(ctx, http.MethodGet, "/api/status", nil, &s)
	return s, err
}
