package hil

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// PowerStatus reports whether node is on, through HIL's redirect to OBMd.
// A node whose OBM is disabled (a free node) is node.ErrBlocked.
func (c *Client) PowerStatus(ctx context.Context, node string) (bool, error) {
	if err := checkName("node", node); err != nil {
		return false, fmt.Errorf("power status: %w", err)
	}
	var st struct {
		PowerStatus string `json:"power_status"`
	}
	if err := c.obm(ctx, node, http.MethodGet, "power_status", nil, &st); err != nil {
		return false, fmt.Errorf("power status of node %s: %w", node, err)
	}
	on, err := parsePowerStatus(st.PowerStatus)
	if err != nil {
		return false, fmt.Errorf("power status of node %s: %w", node, err)
	}
	return on, nil
}

// parsePowerStatus reads OBMd's power_status: "on"/"off" from its IPMI and
// dummy drivers, "Chassis Power is on"-style text from others.
func parsePowerStatus(s string) (bool, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	switch {
	case t == "on" || strings.HasSuffix(t, " on"):
		return true, nil
	case t == "off" || strings.HasSuffix(t, " off"):
		return false, nil
	}
	return false, fmt.Errorf("%w: unrecognised power status %q", node.ErrBackend, s)
}

// Power sends a chassis power command through HIL and OBMd. Cycle and
// reset are power_cycle with force false and true; soft is node.ErrBadArgument,
// as HIL has no ACPI shutdown (power_off is a hard off).
func (c *Client) Power(ctx context.Context, name string, a node.PowerAction) error {
	if err := checkName("node", name); err != nil {
		return fmt.Errorf("power %s: %w", a, err)
	}
	var op string
	var body any
	switch a {
	case node.PowerOn:
		op = "power_on"
	case node.PowerOff:
		op = "power_off"
	case node.PowerCycle:
		op, body = "power_cycle", cycleArg{Force: false} // OBMd answers 400 to no body
	case node.PowerReset:
		op, body = "power_cycle", cycleArg{Force: true}
	case node.PowerSoft:
		return fmt.Errorf("power %s node %s: %w: soft power-off is not supported by HIL", a, name, node.ErrBadArgument)
	default:
		_, err := node.ParsePowerAction(string(a))
		return fmt.Errorf("power node %s: %w", name, err)
	}
	if err := c.obm(ctx, name, http.MethodPost, op, body, nil); err != nil {
		return fmt.Errorf("power %s node %s: %w", a, name, err)
	}
	return nil
}

// SetBootDevice sets node's boot device through HIL and OBMd. HIL knows pxe,
// disk and none, so bios and cdrom are node.ErrBadArgument. HIL has no
// persistence flag: persistent is ignored (OBMd's IPMI driver always sets
// the device persistently).
func (c *Client) SetBootDevice(ctx context.Context, name string, d node.BootDevice, persistent bool) error {
	if err := checkName("node", name); err != nil {
		return fmt.Errorf("set boot device: %w", err)
	}
	switch d {
	case node.BootPXE, node.BootDisk:
	case node.BootBIOS, node.BootCDROM:
		return fmt.Errorf("set boot device of node %s: %w: %s is not supported by HIL (pxe, disk or none)", name, node.ErrBadArgument, d)
	default:
		_, err := node.ParseBootDevice(string(d))
		return fmt.Errorf("set boot device of node %s: %w", name, err)
	}
	if err := c.obm(ctx, name, http.MethodPut, "boot_device", bootdevArg{Bootdev: string(d)}, nil); err != nil {
		return fmt.Errorf("set boot device of node %s to %s: %w", name, d, err)
	}
	return nil
}

// obm makes a call HIL answers with a 307 to OBMd. HIL forgets to keep
// OBMd tokens across its own restarts, after which OBMd answers 401 while
// HIL still thinks the OBM is enabled; the remedy is to enable the OBM
// again (a fresh token), once.
func (c *Client) obm(ctx context.Context, node, method, op string, in, out any) error {
	path := nodePath(node) + "/" + op
	call := func() error {
		if method == http.MethodGet {
			in = nil // never a body on a GET
		}
		return c.call(ctx, c.obmTimeout, method, path, in, out)
	}
	err := call()
	e, ok := asAPIError(err)
	if !ok || e.obmdPath == "" || e.status != http.StatusUnauthorized {
		return err
	}
	c.log.WarnContext(ctx, "hil: OBMd refused HIL's token; enabling the OBM again", "node", node, "op", op)
	if rerr := c.setOBM(ctx, node, true); rerr != nil {
		return fmt.Errorf("%w (re-enabling the OBM failed: %w)", err, rerr)
	}
	return call()
}
