package storage

import (
	"fmt"
	"strings"
)

// MaxSegmentLen is the longest namespace or volume part of a name.
const MaxSegmentLen = 63

// ValidateName checks a volume name and returns nil or an error wrapping
// ErrInvalidName. A name is one segment ("scratch") or a namespace and a
// segment joined by a single slash ("images/ubuntu-22.04",
// "disks/acme.web-1", "snapshots/acme.snap-1"). Each segment is 1–63 bytes
// of [a-z0-9._-] starting with [a-z0-9], and ".." appears nowhere. So a
// name can never be absolute, climb out of the root, or collide with the
// driver's own entries, which all start with a dot.
func ValidateName(name string) error {
	_, _, err := splitName(name)
	return err
}

// splitName validates name and returns its namespace ("" for none) and
// its last segment.
func splitName(name string) (ns, leaf string, err error) {
	if strings.Contains(name, "..") {
		return "", "", fmt.Errorf("%w: %q contains \"..\"", ErrInvalidName, name)
	}
	ns, leaf, found := strings.Cut(name, "/")
	if !found {
		ns, leaf = "", name
	} else if err := checkSegment(name, ns); err != nil {
		return "", "", err
	}
	if err := checkSegment(name, leaf); err != nil {
		return "", "", err
	}
	return ns, leaf, nil
}

func checkSegment(name, seg string) error {
	switch {
	case seg == "":
		return fmt.Errorf("%w: %q has an empty segment", ErrInvalidName, name)
	case len(seg) > MaxSegmentLen:
		return fmt.Errorf("%w: %q has a segment longer than %d bytes", ErrInvalidName, name, MaxSegmentLen)
	case !isLowerAlnum(seg[0]):
		return fmt.Errorf("%w: %q: a segment must start with [a-z0-9]", ErrInvalidName, name)
	}
	for i := 0; i < len(seg); i++ {
		if c := seg[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%w: %q: only [a-z0-9._-] and one \"/\" are allowed", ErrInvalidName, name)
		}
	}
	return nil
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
