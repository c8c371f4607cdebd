// Package vault connects the appliance to HashiCorp Vault: a KV v2 Store
// meeting the secrets.Store contract, and a pki.Authority on the PKI
// secrets engine. It is the only importer of the Vault SDK; nothing of it
// leaks through the types it returns.
package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// Sentinel errors for conditions callers branch on; match with errors.Is.
var (
	// ErrUnreachable means Vault did not answer: connection refused, DNS,
	// TLS, or no answer within Config.Timeout.
	ErrUnreachable = errors.New("vault unreachable")
	// ErrSealed means Vault answered but is sealed.
	ErrSealed = errors.New("vault is sealed")
	// ErrPermissionDenied means Vault refused the token (or AppRole
	// credentials) for the request.
	ErrPermissionDenied = errors.New("vault permission denied")
	// ErrConfig means the Config is unusable; nothing was contacted.
	ErrConfig = errors.New("invalid vault config")
)

// Defaults of Config.
const (
	DefaultKVMount  = "secret"
	DefaultRoot     = "malleable"
	DefaultPKIMount = "pki"
	DefaultTimeout  = 10 * time.Second
)

// Config says how to reach and log in to Vault. Exactly one way to log in
// is given: Token, TokenFile, or RoleID with SecretIDFile (AppRole).
type Config struct {
	// Address is Vault's URL, such as https://vault.example:8200.
	Address string
	// Token is a Vault token. Prefer TokenFile: a token in a config file
	// is easy to leak.
	Token string
	// TokenFile holds a Vault token (surrounding space is trimmed).
	TokenFile string
	// RoleID is an AppRole role ID; SecretIDFile holds its secret ID.
	RoleID       string
	SecretIDFile string
	// KVMount is the KV v2 mount; default "secret".
	KVMount string
	// Root is the path prefix of every secret inside KVMount; default
	// "malleable". It follows secrets.ValidatePath.
	Root string
	// PKIMount is the PKI secrets engine mount; default "pki". Connect
	// enables it when missing.
	PKIMount string
	// CAFile is a PEM bundle to verify Vault's TLS certificate with; empty
	// uses the system's roots.
	CAFile string
	// Timeout bounds every call to Vault, retries included; default 10s.
	Timeout time.Duration
}

// withDefaults returns c with defaults filled in, validated.
func (c Config) withDefaults() (Config, error) {
	if c.KVMount == "" {
		c.KVMount = DefaultKVMount
	}
	if c.Root == "" {
		c.Root = DefaultRoot
	}
	if c.PKIMount == "" {
		c.PKIMount = DefaultPKIMount
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	u, err := url.Parse(c.Address)
	switch {
	case c.Address == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return c, fmt.Errorf("%w: address %q is not an http(s) URL", ErrConfig, c.Address)
	case c.Timeout < 0:
		return c, fmt.Errorf("%w: negative timeout", ErrConfig)
	}
	for name, v := range map[string]string{"kv_mount": c.KVMount, "root": c.Root, "pki_mount": c.PKIMount} {
		if err := secrets.ValidatePath(v); err != nil {
			return c, fmt.Errorf("%w: %s: %w", ErrConfig, name, err)
		}
	}
	ways := 0
	for _, set := range []bool{c.Token != "", c.TokenFile != "", c.RoleID != "" || c.SecretIDFile != ""} {
		if set {
			ways++
		}
	}
	if ways != 1 {
		return c, fmt.Errorf("%w: give exactly one of token, token_file, or role_id with secret_id_file", ErrConfig)
	}
	if (c.RoleID == "") != (c.SecretIDFile == "") {
		return c, fmt.Errorf("%w: AppRole needs both role_id and secret_id_file", ErrConfig)
	}
	return c, nil
}

// Client is a logged-in connection to Vault that keeps its token alive
// until Close. It is safe for concurrent use.
type Client struct {
	cfg   Config
	api   *api.Client
	log   *slog.Logger
	stats loginStats
	stop  context.CancelFunc
	done  chan struct{}

	pkiMu sync.Mutex // guards pkiReady
	// pkiReady is set once the PKI mount and root CA are known to exist.
	pkiReady bool
	roleMu   sync.Mutex
	roles    map[string][]string // tenant → names its role allows
}

// Connect checks Vault is reachable and unsealed, logs in, and starts the
// token's renewal in the background (log may be nil). Errors wrap ErrConfig,
// ErrUnreachable, ErrSealed or ErrPermissionDenied.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ac, err := newAPIClient(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, api: ac, log: log.With("vault", cfg.Address), roles: map[string][]string{}}
	if err := c.checkHealth(ctx); err != nil {
		return nil, err
	}
	secret, err := c.login(ctx)
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(context.Background())
	c.stop, c.done = stop, make(chan struct{})
	go c.keepAlive(wctx, secret)
	return c, nil
}

// newAPIClient builds the SDK client from cfg alone: unlike
// api.DefaultConfig it reads no VAULT_* environment variable, and it
// clears any token the SDK took from VAULT_TOKEN.
func newAPIClient(cfg Config) (*api.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pemBytes, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: ca_file: %w", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%w: ca_file %s holds no PEM certificate", ErrConfig, cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.TLSHandshakeTimeout = cfg.Timeout
	tr.Proxy = nil // Vault is reached directly, never through $HTTP_PROXY
	ac, err := api.NewClient(&api.Config{
		Address: cfg.Address,
		HttpClient: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // the SDK handles Vault's redirects itself
		}},
		Timeout:      cfg.Timeout,
		MaxRetries:   2,
		MinRetryWait: 100 * time.Millisecond,
		MaxRetryWait: 500 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	ac.ClearToken()
	ac.ClearNamespace()
	return ac, nil
}

// call runs f with a deadline of cfg.Timeout under ctx and turns its error
// into one of ours.
func (c *Client) call(ctx context.Context, f func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return c.classify(ctx, f(cctx))
}

// classify maps an SDK error to our sentinels, keeping the original.
func (c *Client) classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil { // the caller gave up: say so, not "unreachable"
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%w: %w", ErrPermissionDenied, err)
		case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(err.Error()), "sealed"):
			return fmt.Errorf("%w: %w", ErrSealed, err)
		}
		return err
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w at %s (no answer within %s): %w", ErrUnreachable, c.cfg.Address, c.cfg.Timeout, err)
	}
	return err
}

// checkHealth fails with ErrUnreachable or ErrSealed when Vault cannot
// serve requests.
func (c *Client) checkHealth(ctx context.Context) error {
	var h *api.HealthResponse
	err := c.call(ctx, func(ctx context.Context) (err error) {
		h, err = c.api.Sys().HealthWithContext(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("connect to vault: %w", err)
	}
	if h.Sealed {
		return fmt.Errorf("connect to vault at %s: %w", c.cfg.Address, ErrSealed)
	}
	if !h.Initialized {
		return fmt.Errorf("connect to vault at %s: %w (not initialised)", c.cfg.Address, ErrSealed)
	}
	return nil
}

// Close stops the token's renewal. It does not revoke the token.
func (c *Client) Close() error {
	c.stop()
	<-c.done
	return nil
}
