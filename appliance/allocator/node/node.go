// Package node is the vocabulary shared by the allocators and their
// consumers: the power actions and boot devices a node's BMC takes, and the
// sentinel errors both allocators (a real HIL, or the embedded one) return
// and callers match with errors.Is. It imports only the standard library,
// so any package may use it.
package node

import (
	"errors"
	"fmt"
)

// PowerAction is a chassis power command.
type PowerAction string

// Power actions, as Foreman's smart-proxy names them.
const (
	PowerOn    PowerAction = "on"
	PowerOff   PowerAction = "off"
	PowerCycle PowerAction = "cycle"
	PowerReset PowerAction = "reset"
	PowerSoft  PowerAction = "soft" // ask the OS to shut down (ACPI)
)

// ParsePowerAction parses on, off, cycle, reset or soft.
func ParsePowerAction(s string) (PowerAction, error) {
	switch a := PowerAction(s); a {
	case PowerOn, PowerOff, PowerCycle, PowerReset, PowerSoft:
		return a, nil
	}
	return "", fmt.Errorf("%w: unknown power action %q (want on, off, cycle, reset or soft)", ErrBadArgument, s)
}

// BootDevice is the device a node boots from next.
type BootDevice string

// Boot devices, as Foreman's smart-proxy names them.
const (
	BootPXE   BootDevice = "pxe"
	BootDisk  BootDevice = "disk"
	BootBIOS  BootDevice = "bios"
	BootCDROM BootDevice = "cdrom"
)

// ParseBootDevice parses pxe, disk, bios or cdrom.
func ParseBootDevice(s string) (BootDevice, error) {
	switch d := BootDevice(s); d {
	case BootPXE, BootDisk, BootBIOS, BootCDROM:
		return d, nil
	}
	return "", fmt.Errorf("%w: unknown boot device %q (want pxe, disk, bios or cdrom)", ErrBadArgument, s)
}

// Sentinel errors shared by both allocators and their consumers; match with
// errors.Is.
var (
	// ErrNotFound: no such node or project (HIL NotFoundError, 404).
	ErrNotFound = errors.New("not found")
	// ErrOwned: the node belongs to another project (HIL BlockedError or
	// ProjectMismatchError, 409).
	ErrOwned = errors.New("node is owned by another project")
	// ErrBlocked: HIL refuses for now — OBM enabled, networks attached,
	// pending network actions, OBM not enabled (409).
	ErrBlocked = errors.New("blocked")
	// ErrBadArgument: the request was malformed (HIL 400).
	ErrBadArgument = errors.New("bad argument")
	// ErrBackend: the allocator or the BMC failed (HIL 500, OBMError, or
	// an IPMI error).
	ErrBackend = errors.New("backend failure")
	// ErrNoPowerControl: the node has no BMC the allocator can drive, so
	// its power is not managed. A handover skips its power steps.
	ErrNoPowerControl = errors.New("node has no power control")
	// ErrPending: HIL is still working on an earlier request for the node
	// (a networking action PENDING, 409 "A networking operation is already
	// active on the nic."). Not a failure: try again later.
	ErrPending = errors.New("HIL has an operation pending")
	// ErrUnavailable: HIL or OBMd did not answer in time, or could not be
	// reached. It also matches ErrBackend. Not the node's fault: try again
	// later.
	ErrUnavailable = errors.New("HIL unavailable")
)
