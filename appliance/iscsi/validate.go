package iscsi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/malleable-cloud/malleable/templates/iqn"
)

// Limits of the values that reach tgtadm.
const (
	// MaxIQNLen is the longest iSCSI name, in bytes (RFC 7143 §4.2.7.1).
	MaxIQNLen = iqn.MaxLen
	// MaxCHAPUserLen is the longest CHAP user name.
	MaxCHAPUserLen = 64
	// MinCHAPSecretLen and MaxCHAPSecretLen bound a CHAP secret.
	MinCHAPSecretLen = 12
	MaxCHAPSecretLen = 16
	// MaxBackingLen is the longest backing path, in bytes.
	MaxBackingLen = 1024

	maxDNSLabelLen = 63
	chapCharset    = "[A-Za-z0-9._-]"
)

// Validate checks every field of t, including that Backing exists and is a
// regular file, and returns an error wrapping ErrInvalid that names every
// problem, or nil. Its errors never contain the secret.
func (t Target) Validate() error {
	var errs []error
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrInvalid, field, err))
		}
	}
	add("target IQN", checkIQN(t.IQN))
	add("backing", checkBacking(t.Backing))
	add("CHAP user", checkCHAP(t.CHAPUser, 1, MaxCHAPUserLen))
	add("CHAP secret", checkCHAP(t.CHAPSecret, MinCHAPSecretLen, MaxCHAPSecretLen))
	for i, ini := range t.Initiators {
		add(fmt.Sprintf("initiator %d", i+1), checkIQN(ini))
	}
	return errors.Join(errs...)
}

// ValidateIQN returns an error wrapping ErrInvalid unless iqn is an
// iqn.<yyyy-mm>.<reversed-domain>[:<unique>] name in lower case: the
// naming authority is dot-separated labels of [a-z0-9-] that neither start
// nor end with '-', the unique part is [a-z0-9.:-]. RFC 3722 folds names to
// lower case and tgtd compares them byte for byte, so upper case is
// refused rather than guessed. '_' is refused because tgtd 1.0.85 refuses
// it in target names ("invalid request").
func ValidateIQN(iqn string) error {
	if err := checkIQN(iqn); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

func checkIQN(name string) error { return iqn.Check(name, "") }

// checkCHAP accepts minLen to maxLen characters of [A-Za-z0-9._-], not
// starting with '-'. Its errors never contain the value, which may be a
// secret.
func checkCHAP(v string, minLen, maxLen int) error {
	switch {
	case v == "":
		return errors.New("empty")
	case len(v) < minLen:
		return fmt.Errorf("shorter than %d characters", minLen)
	case len(v) > maxLen:
		return fmt.Errorf("longer than %d characters", maxLen)
	case v[0] == '-':
		return errors.New("starts with '-'")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("character %d is outside %s", i+1, chapCharset)
		}
	}
	return nil
}

// checkBacking accepts the absolute, clean path of an existing regular file
// (symbolic links are followed, as tgtd does). Control characters are
// refused because tgtadm's listing is line-oriented.
func checkBacking(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case len(p) > MaxBackingLen:
		return fmt.Errorf("longer than %d bytes", MaxBackingLen)
	case !utf8.ValidString(p):
		return errors.New("not valid UTF-8")
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%q contains control characters", p)
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q is not absolute", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("%q is not clean (want %q)", p, filepath.Clean(p))
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%q is not a regular file (%s)", p, fi.Mode().Type())
	}
	return nil
}

// normalizeInitiators returns the initiators sorted and without duplicates.
func normalizeInitiators(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

func isDigit(c byte) bool      { return '0' <= c && c <= '9' }
func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || isDigit(c) }
func isAlnum(c byte) bool      { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }
