package templates

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/malleable-cloud/malleable/templates/iqn"
)

// Limits on field lengths. An iSCSI name is at most 223 bytes (RFC 7143
// §4.2.7.1); a DNS name at most 253 (RFC 1035, without the trailing dot).
const (
	maxPortalLen    = 253
	maxCHAPLen      = 255
	minCHAPSecret   = 12 // Windows' initiator enforces 12; shorter ones fall to offline guessing
	maxLUN          = 255
	maxRetryDelay   = 3600
	maxDNSLabelLen  = 63
	chapCharsetDesc = "[A-Za-z0-9._-]"
)

// validate checks every field of s, which already has its defaults. The
// rules are deliberately narrower than what iSCSI allows: each value is a
// single iPXE argument made only of characters that iPXE's script parser and
// settings expansion treat literally (no whitespace, quotes, backslash, '$',
// '{', '}', '#', '|', '&', control or non-ASCII bytes), and none starts with
// '-', which iPXE's option parser would read as an option.
func (s SANBoot) validate() error {
	var errs []error
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrInvalid, field, err))
		}
	}
	add("initiator IQN", checkIQN(s.InitiatorIQN))
	add("target IQN", checkIQN(s.TargetIQN))
	add("CHAP user", checkCHAP(s.CHAPUser, 1))
	// The secret is never quoted back, so checkCHAP's errors do not show values.
	add("CHAP secret", checkCHAP(s.CHAPSecret, minCHAPSecret))
	add("portal", checkPortal(s.Portal))
	add("port", checkRange(s.Port, 1, 65535))
	add("LUN", checkRange(s.LUN, 1, maxLUN))
	add("retry delay", checkRange(s.RetryDelay, 1, maxRetryDelay))
	return errors.Join(errs...)
}

// checkIQN accepts iqn.<yyyy-mm>.<reversed-domain>[:<unique>] in lower
// case: the domain is dot-separated labels of [a-z0-9-] not starting or
// ending with '-', the unique part is [a-z0-9.:_-]. RFC 3720 leaves '_' out
// but tgt and iPXE accept it and storage names contain it. iPXE takes
// everything after the URI's fifth colon as the target name, so colons in
// the unique part are safe.
func checkIQN(name string) error { return iqn.Check(name, "_") }

// checkCHAP accepts minLen to maxCHAPLen characters of [A-Za-z0-9._-], not
// starting with '-'. Its errors never contain the value, which may be a secret.
func checkCHAP(v string, minLen int) error {
	switch {
	case len(v) < minLen && minLen == 1:
		return errors.New("empty")
	case len(v) < minLen:
		return fmt.Errorf("shorter than %d characters", minLen)
	case len(v) > maxCHAPLen:
		return fmt.Errorf("longer than %d characters", maxCHAPLen)
	case v[0] == '-':
		return errors.New("starts with '-'")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("character %d is outside %s", i+1, chapCharsetDesc)
		}
	}
	return nil
}

// checkPortal accepts an IPv4 address or a DNS name. IPv6 literals are
// refused: the colons of an address collide with the URI's separators.
func checkPortal(p string) error {
	if p == "" {
		return errors.New("empty")
	}
	if addr, err := netip.ParseAddr(p); err == nil {
		switch {
		case !addr.Is4():
			return fmt.Errorf("%q: IPv6 portals are not supported", p)
		case addr.IsUnspecified() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return fmt.Errorf("%q is not a unicast address", p)
		}
		return nil
	}
	if err := checkHostName(p); err != nil {
		return fmt.Errorf("%q is neither an IPv4 address nor a DNS name: %w", p, err)
	}
	return nil
}

// checkHostName accepts dot-separated labels of 1 to 63 letters, digits
// and '-', not starting or ending with '-'; the last label must not be all
// digits (RFC 3696 §2), so that "10.0.2" or "010.0.2.2" is not mistaken for
// an address.
func checkHostName(d string) error {
	if d == "" {
		return errors.New("empty")
	}
	if len(d) > maxPortalLen {
		return fmt.Errorf("longer than %d bytes", maxPortalLen)
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > maxDNSLabelLen {
			return fmt.Errorf("labels must be 1 to %d characters", maxDNSLabelLen)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("a label starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlnum(c) && c != '-' {
				return errors.New("only [A-Za-z0-9-] and '.' are allowed")
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("the last label is all digits")
	}
	return nil
}

func checkRange(v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%d is outside %d..%d", v, lo, hi)
	}
	return nil
}

func isDigit(c byte) bool      { return '0' <= c && c <= '9' }
func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || isDigit(c) }
func isAlnum(c byte) bool      { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }
