package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

// classify returns err with the sentinel that fits it prepended. parent is
// the caller's context and opCtx the operation's (parent plus the budget).
func (c *IPMI) classify(parent, opCtx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(parent.Err(), context.Canceled) {
		// The caller gave up; that says nothing about the BMC.
		return fmt.Errorf("%w: %w", context.Canceled, err)
	}
	if sentinel := sentinelFor(err); sentinel != nil {
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	if opCtx.Err() != nil {
		// The deadline passed in a part of the handshake whose error
		// go-ipmi flattened to text; keep DeadlineExceeded in the chain.
		return fmt.Errorf("%w: %w: %w", ErrUnreachable, context.DeadlineExceeded, err)
	}
	return err
}

// sentinelFor maps a go-ipmi error to ErrAuth, ErrUnsupported or
// ErrUnreachable, or nil when none fits.
func sentinelFor(err error) error {
	var status *types.RmcpStatusError
	if errors.Is(err, client.ErrRAKPAuthentication) ||
		errors.As(err, &status) && isAuthStatus(status.StatusCode()) {
		return ErrAuth
	}
	var resp *types.ResponseError
	if errors.As(err, &resp) {
		switch resp.CompletionCode() {
		case types.CodeInvalidCommand, types.CodeRequestDataFieldInvalid:
			return ErrUnsupported
		}
		return nil
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &opErr) || errors.As(err, &dnsErr) {
		return ErrUnreachable
	}
	return sentinelFromText(err.Error())
}

func isAuthStatus(code types.RmcpStatusCode) bool {
	switch code {
	case types.RmcpStatusCodeUnauthorizedName, // unknown user
		types.RmcpStatusCodeUnauthorizedRoleOfPriLevel, // the user may not be administrator
		types.RmcpStatusCodeInvalidRole:
		return true
	}
	return false
}

// sentinelFromText is the one place that reads go-ipmi's error text, because
// go-ipmi v0.9.1 leaves nothing else to go on in two cases: its RMCP+
// handshake (Client.Connect20) joins the error of every cipher suite it tried
// with %v, so client.ErrRAKPAuthentication, *types.RmcpStatusError and the
// net errors of the handshake drop out of the chain; and a reply that never
// comes is reported with an unexported error, always under the "IPMI LAN: "
// prefix of its UDP exchange. Recheck these strings when upgrading go-ipmi;
// TestSentinelFor holds the messages v0.9.1 produced against ipmi_sim.
func sentinelFromText(msg string) error {
	for _, auth := range []string{
		client.ErrRAKPAuthentication.Error(), // wrong password: "RAKP authentication failed"
		types.RmcpStatusCodeUnauthorizedName.String(),
		types.RmcpStatusCodeUnauthorizedRoleOfPriLevel.String(),
		types.RmcpStatusCodeInvalidRole.String(),
	} {
		if strings.Contains(msg, auth) {
			return ErrAuth
		}
	}
	if strings.Contains(msg, "IPMI LAN: ") {
		return ErrUnreachable
	}
	return nil
}
