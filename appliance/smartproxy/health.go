package smartproxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"
)

// Health checks a running smart-proxy from beside it, as a container
// health check does: its own listener must answer GET /features with the
// module list, and the broker must accept its credential. The error says
// which failed and why.
func Health(ctx context.Context, cfg Config, b Broker) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	u, err := localURL(cfg.Proxy)
	if err != nil {
		return "", err
	}
	hc := &http.Client{Transport: &http.Transport{
		// A liveness probe of our own listener over loopback: the
		// certificate names the proxy's public host, not this address,
		// and nothing secret is sent.
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/features", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("the smart-proxy does not answer at %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	id, err := b.Whoami(ctx)
	if err != nil {
		return "", fmt.Errorf("the smart-proxy answers at %s, but the appliance's broker at %s does not take its credential: %w", u, cfg.Broker.URL, err)
	}
	var mods []string
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &mods) != nil || len(mods) == 0 {
		return "", fmt.Errorf("the smart-proxy at %s answered GET /features with %d %q", u, resp.StatusCode, body)
	}
	if want := advertised(cfg, id); !slices.Equal(mods, want) {
		return "", fmt.Errorf("the smart-proxy at %s advertises %v but the appliance's broker at %s says %v (its M2 is on: %v); it is asked again every %s",
			u, mods, cfg.Broker.URL, want, id.Features.M2, identityTTL)
	}
	return fmt.Sprintf("smart-proxy at %s serves %v for tenant %s; broker %s reachable", u, mods, id.Tenant, cfg.Broker.URL), nil
}

// localURL is the base URL of the proxy's own HTTPS (else HTTP) listener,
// seen from the same host.
func localURL(c ProxyConfig) (string, error) {
	scheme, addr := "https", c.HTTPSListen
	if addr == "" {
		scheme, addr = "http", c.HTTPListen
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("smart_proxy listen address %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}
