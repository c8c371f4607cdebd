package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

// TestSentinelFor covers the error paths a simulated BMC cannot produce on
// demand, and pins the go-ipmi v0.9.1 messages that sentinelFromText reads
// (copied from runs against ipmi_sim).
func TestSentinelFor(t *testing.T) {
	tests := map[string]struct {
		err  error
		want error
	}{
		"invalid data field (0xcc)": {fmt.Errorf("SetSystemBootOptions failed, err: %w", types.NewResponseError(types.CodeRequestDataFieldInvalid, "x")), ErrUnsupported},
		"invalid command (0xc1)":    {types.NewResponseError(types.CodeInvalidCommand, "x"), ErrUnsupported},
		"node busy (0xc0)":          {types.NewResponseError(types.CodeNodeBusy, "x"), nil},
		"insufficient privilege":    {types.NewResponseError(types.CodeInsufficientPrivilege, "x"), nil},
		"RAKP mismatch, wrapped":    {fmt.Errorf("rakp: %w", client.ErrRAKPAuthentication), ErrAuth},
		"unauthorized name status":  {types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedName), ErrAuth},
		"unauthorized role status":  {types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedRoleOfPriLevel), ErrAuth},
		"no session resources":      {types.NewRmcpStatusError(types.RmcpStatusCodeNoResToCreateSess), nil},
		"deadline":                  {fmt.Errorf("canceled from caller: %w", context.DeadlineExceeded), ErrUnreachable},
		"connection refused":        {&net.OpError{Op: "read", Net: "udp", Err: syscall.ECONNREFUSED}, ErrUnreachable},
		"unresolvable host":         {fmt.Errorf("resolve addr failed, err: %w", &net.DNSError{Err: "no such host", Name: "bmc.invalid"}), ErrUnreachable},
		"wrong password text": {errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: rakp1 failed with cipher suite id (3), " +
			"err: validate rakp2 message failed, err: RAKP2 authentication code mismatch: RAKP authentication failed"), ErrAuth},
		"unknown user text": {errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: rakp1 failed with cipher suite id (3), " +
			"err: validate rakp2 message failed, err: RMCP+ status 0x0d: Unauthorized name"), ErrAuth},
		"no answer text": {errors.New("cmd: Get Channel Authentication Capabilities failed, err: IPMI LAN: no matching IPMI response " +
			"(expected rqSeq 0x01, command 0x38) before UDP read deadline after 1 attempt(s): udp exchange: no datagram matched before deadline"), ErrUnreachable},
		"stale session text": {errors.New("IPMI LAN: no matching IPMI response (expected rqSeq 0x04, command 0x01) before UDP read deadline " +
			"after 5 attempt(s): udp exchange: no datagram matched before deadline"), ErrUnreachable},
		"session limit text": {errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: RMCP+ Open Session failed with " +
			"cipher suite id (3), err: unpack session setup response failed, err: unpacked data is too short (2/8)"), nil},
		"anything else": {errors.New("boom"), nil},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := sentinelFor(tt.err); got != tt.want {
				t.Errorf("sentinelFor(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestClassifyContexts(t *testing.T) {
	c := New(Options{})
	live := context.Background()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	flattened := errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: rakp3 failed: context deadline exceeded")

	tests := map[string]struct {
		parent, op context.Context
		err        error
		want       []error
		notWant    error
	}{
		"caller canceled":           {canceled, canceled, flattened, []error{context.Canceled}, ErrUnreachable},
		"budget ran out, flattened": {live, expired, flattened, []error{ErrUnreachable, context.DeadlineExceeded}, nil},
		"plain failure":             {live, live, errors.New("boom"), nil, ErrUnreachable},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := c.classify(tt.parent, tt.op, tt.err)
			for _, w := range tt.want {
				if !errors.Is(got, w) {
					t.Errorf("classify = %v, want it to match %v", got, w)
				}
			}
			if tt.notWant != nil && errors.Is(got, tt.notWant) {
				t.Errorf("classify = %v, must not match %v", got, tt.notWant)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("classify = %v lost the original error", got)
			}
		})
	}
}
