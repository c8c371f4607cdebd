// Package allocator opens the appliance's allocator: what puts nodes in
// projects and drives their power. Open chooses a real HIL (allocator/hil)
// or the embedded allocator (allocator/embedded, SQLite and IPMI) and, for
// HIL, checks the account at start. Both return the sentinels of
// allocator/node. This package imports its children; they import only
// allocator/node and lower packages, never this one.
package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/allocator/hil"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/bmc"
)

// Allocator is what the appliance needs from an allocator: *hil.Client (a
// real HIL) or *embedded.Allocator. Optional abilities (listing every
// node's project, verifying one, checking a node before it is added) are
// asserted by the consumers that use them.
type Allocator interface {
	Connect(ctx context.Context, node, project string) error
	Detach(ctx context.Context, node, project string) error
	NodeProject(ctx context.Context, node string) (string, error)
	PowerStatus(ctx context.Context, node string) (bool, error)
	Power(ctx context.Context, node string, a node.PowerAction) error
	SetBootDevice(ctx context.Context, node string, d node.BootDevice, persistent bool) error
}

var (
	_ Allocator = (*hil.Client)(nil)
	_ Allocator = (*embedded.Allocator)(nil)
)

// Config chooses and configures the allocator.
type Config struct {
	// Type is "hil" for a real HIL; anything else (the configuration
	// validates it) is the embedded allocator.
	Type string
	// HIL configures the HIL client. A nil Logger becomes Open's logger
	// with component=hil.
	HIL hil.ClientConfig
	// BMC configures the embedded allocator's IPMI client. A nil Logger
	// becomes Open's logger with component=bmc.
	BMC bmc.Options
}

// checkTimeout bounds the start-up check of a HIL account.
const checkTimeout = 30 * time.Second

// Open returns the allocator cfg.Type names. The embedded one keeps
// membership in st and reads BMC passwords from sec (HIL needs neither).
// For HIL it checks the account first: an account that is not a HIL
// administrator is refused, while HIL not answering is only a warning,
// since handovers wait for it.
func Open(ctx context.Context, cfg Config, st embedded.Store, sec embedded.Secrets, log *slog.Logger) (Allocator, error) {
	if cfg.Type != "hil" {
		if cfg.BMC.Logger == nil {
			cfg.BMC.Logger = log.With("component", "bmc")
		}
		log.Info("allocator: embedded (IPMI)")
		return embedded.New(st, sec, bmc.New(cfg.BMC)), nil
	}
	if cfg.HIL.Logger == nil {
		cfg.HIL.Logger = log.With("component", "hil")
	}
	// The client reads the password file again whenever it changes.
	c, err := hil.NewClient(cfg.HIL)
	if err != nil {
		return nil, fmt.Errorf("hil allocator: %w", err)
	}
	log.Info("allocator: HIL", "endpoint", cfg.HIL.Endpoint)
	if err := checkAdmin(ctx, c, log); err != nil {
		return nil, err
	}
	return c, nil
}

// checkAdmin refuses a HIL account that is not an administrator and warns
// when HIL does not answer.
func checkAdmin(ctx context.Context, c *hil.Client, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	err := c.CheckAdmin(ctx)
	switch {
	case errors.Is(err, hil.ErrUnauthorized):
		return fmt.Errorf("hil allocator: %w", err)
	case err != nil:
		log.Warn("HIL did not answer the start-up check; handovers wait for it", "err", err)
	default:
		log.Info("HIL account is an administrator")
	}
	return nil
}
