package vault

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

// reloginBackoff bounds the wait between failed AppRole logins.
const reloginBackoff = 30 * time.Second

// loginStats counts what keepAlive did, for tests and logs.
type loginStats struct {
	logins   atomic.Int64
	renewals atomic.Int64
}

// login sets the client's token and returns what the lifetime watcher
// renews: nil when the token never expires (a root token) or cannot be
// renewed.
func (c *Client) login(ctx context.Context) (*api.Secret, error) {
	if c.cfg.RoleID != "" {
		return c.loginAppRole(ctx)
	}
	token := c.cfg.Token
	if c.cfg.TokenFile != "" {
		b, err := os.ReadFile(c.cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: token_file: %w", ErrConfig, err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("%w: token_file %s is empty", ErrConfig, c.cfg.TokenFile)
		}
	}
	c.api.SetToken(token)
	var self *api.Secret
	err := c.call(ctx, func(ctx context.Context) (err error) {
		self, err = c.api.Auth().Token().LookupSelfWithContext(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vault login with a token: %w", err)
	}
	c.stats.logins.Add(1)
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	c.log.Info("vault login", "method", "token", "ttl", ttl, "renewable", renewable)
	if ttl <= 0 || !renewable {
		return nil, nil
	}
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: token, Renewable: true,
		LeaseDuration: int(ttl / time.Second)}}, nil
}

// loginAppRole logs in with the role ID and the secret ID read from its
// file (read again on every login, so a rotated secret ID is picked up).
func (c *Client) loginAppRole(ctx context.Context) (*api.Secret, error) {
	b, err := os.ReadFile(c.cfg.SecretIDFile)
	if err != nil {
		return nil, fmt.Errorf("%w: secret_id_file: %w", ErrConfig, err)
	}
	secretID := strings.TrimSpace(string(b))
	// Log in without the old (maybe expired) token: Vault refuses a
	// request carrying an invalid token, even a login.
	anon, err := c.api.Clone()
	if err != nil {
		return nil, fmt.Errorf("vault login with approle: %w", err)
	}
	anon.ClearToken()
	var secret *api.Secret
	err = c.call(ctx, func(ctx context.Context) (err error) {
		secret, err = anon.Logical().WriteWithContext(ctx, "auth/approle/login",
			map[string]any{"role_id": c.cfg.RoleID, "secret_id": secretID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vault login with approle: %w", err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault login with approle: no token in the answer")
	}
	c.api.SetToken(secret.Auth.ClientToken)
	c.stats.logins.Add(1)
	c.log.Info("vault login", "method", "approle", "ttl", time.Duration(secret.Auth.LeaseDuration)*time.Second,
		"renewable", secret.Auth.Renewable)
	return secret, nil
}

// keepAlive renews the token until ctx ends. When renewal stops (the
// token reached its max TTL, or renewing failed), an AppRole client logs
// in again, with backoff; a token client can only warn, since its token
// will expire.
func (c *Client) keepAlive(ctx context.Context, secret *api.Secret) {
	defer close(c.done)
	for {
		if secret == nil {
			<-ctx.Done()
			return
		}
		why := c.watch(ctx, secret)
		if ctx.Err() != nil {
			return
		}
		if c.cfg.RoleID == "" {
			c.log.Warn("vault token can no longer be renewed; calls fail once it expires", "reason", why)
			<-ctx.Done()
			return
		}
		c.log.Info("vault token renewal ended; logging in again", "reason", why)
		secret = c.relogin(ctx)
	}
}

// watch renews secret until the watcher gives up or ctx ends, and says
// why it stopped.
func (c *Client) watch(ctx context.Context, secret *api.Secret) string {
	w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret,
		RenewBehavior: api.RenewBehaviorIgnoreErrors})
	if err != nil {
		return err.Error()
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return "closed"
		case r := <-w.RenewCh():
			c.stats.renewals.Add(1)
			ttl := 0
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			c.log.Debug("vault token renewed", "ttl", time.Duration(ttl)*time.Second)
		case err := <-w.DoneCh():
			if err != nil {
				return err.Error()
			}
			return "lease at its end"
		}
	}
}

// relogin logs in with AppRole until it works or ctx ends.
func (c *Client) relogin(ctx context.Context) *api.Secret {
	wait := time.Second
	for {
		secret, err := c.loginAppRole(ctx)
		if err == nil {
			return secret
		}
		c.log.Error("vault login with approle failed; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, reloginBackoff)
	}
}
