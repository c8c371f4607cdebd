// Package iqn checks iSCSI qualified names, iqn.<yyyy-mm>.<reversed
// domain>[:<unique>], the one way both the tgtd driver and the iPXE
// templates need: lower case, a real month, DNS labels for the naming
// authority. It is pure and imports nothing of ours.
package iqn

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLen is the longest iSCSI name, in bytes (RFC 7143 §4.2.7.1).
const MaxLen = 223

const maxLabelLen = 63

// Check reports why name is not an IQN whose unique part (after the
// naming authority's ':') is made of [a-z0-9.:-] plus the characters in
// extra, or nil. Its errors quote the name.
func Check(name, extra string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > MaxLen:
		return fmt.Errorf("longer than %d bytes", MaxLen)
	}
	rest, ok := strings.CutPrefix(name, "iqn.")
	if !ok {
		return fmt.Errorf("%q does not start with \"iqn.\"", name)
	}
	if len(rest) < 8 || !isDate(rest[:7]) || rest[7] != '.' {
		return fmt.Errorf("%q: expected iqn.<yyyy-mm>.<reversed-domain>[:<unique>]", name)
	}
	domain, unique, hasUnique := strings.Cut(rest[8:], ":")
	if err := checkDomain(domain); err != nil {
		return fmt.Errorf("%q: naming authority: %w", name, err)
	}
	if !hasUnique {
		return nil
	}
	if unique == "" {
		return fmt.Errorf("%q: empty name after ':'", name)
	}
	allowed := ".:-" + extra
	for i := 0; i < len(unique); i++ {
		if c := unique[i]; !isLowerAlnum(c) && !strings.ContainsRune(allowed, rune(c)) {
			return fmt.Errorf("%q: only [a-z0-9.:%s-] may follow the naming authority", name, extra)
		}
	}
	return nil
}

// isDate reports whether s is yyyy-mm with a month 01 to 12.
func isDate(s string) bool {
	if len(s) != 7 || s[4] != '-' {
		return false
	}
	for i, c := range []byte(s) {
		if i != 4 && !isDigit(c) {
			return false
		}
	}
	month := int(s[5]-'0')*10 + int(s[6]-'0')
	return month >= 1 && month <= 12
}

// checkDomain accepts dot-separated labels of 1 to 63 characters of
// [a-z0-9-] that neither start nor end with '-'.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty")
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > maxLabelLen {
			return fmt.Errorf("labels must be 1 to %d characters", maxLabelLen)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("a label starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isLowerAlnum(c) && c != '-' {
				return errors.New("only [a-z0-9-] and '.' are allowed")
			}
		}
	}
	return nil
}

func isDigit(c byte) bool      { return '0' <= c && c <= '9' }
func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || isDigit(c) }
