package node_test

import (
	"errors"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

func TestParse(t *testing.T) {
	for _, s := range []string{"on", "off", "cycle", "reset", "soft"} {
		if a, err := node.ParsePowerAction(s); err != nil || string(a) != s {
			t.Errorf("ParsePowerAction(%q) = %q, %v", s, a, err)
		}
	}
	for _, s := range []string{"pxe", "disk", "bios", "cdrom"} {
		if d, err := node.ParseBootDevice(s); err != nil || string(d) != s {
			t.Errorf("ParseBootDevice(%q) = %q, %v", s, d, err)
		}
	}
	for _, s := range []string{"", "ON", "status", "pxe"} {
		if _, err := node.ParsePowerAction(s); !errors.Is(err, node.ErrBadArgument) {
			t.Errorf("ParsePowerAction(%q): %v, want ErrBadArgument", s, err)
		}
	}
	for _, s := range []string{"", "PXE", "floppy", "on"} {
		if _, err := node.ParseBootDevice(s); !errors.Is(err, node.ErrBadArgument) {
			t.Errorf("ParseBootDevice(%q): %v, want ErrBadArgument", s, err)
		}
	}
}
