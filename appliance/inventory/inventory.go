// Package inventory holds the records an admin registers with the appliance,
// tenants and nodes, together with the rules their fields must follow.
//
// Everything here is pure: parsing and validation with no I/O, so the same
// rules apply in the API, the CLI and the store.
package inventory

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultBMCPort is the IPMI-over-LAN (RMCP+) port used when a BMC address
// names no port.
const DefaultBMCPort = 623

// DefaultTenantBMCRange is where tenant-facing BMC addresses come from
// unless configured: 198.18.0.0/15, reserved for benchmarking (RFC 2544),
// so it collides with no real network.
var DefaultTenantBMCRange = netip.MustParsePrefix("198.18.0.0/15")

// MaxNameLen is the longest tenant or node name accepted.
const MaxNameLen = 40

// TenantState is where a tenant is in its lifecycle.
type TenantState string

// Tenant states. A tenant starts as registered (a record only); onboarding
// moves it through onboarding to ready, and offboarding back out.
const (
	TenantRegistered  TenantState = "registered"
	TenantOnboarding  TenantState = "onboarding"
	TenantReady       TenantState = "ready"
	TenantOffboarding TenantState = "offboarding"
	TenantFailed      TenantState = "failed"
)

// Tenant is an organisation that leases nodes and runs its own Foreman.
type Tenant struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	ForemanURL  string      `json:"foreman_url,omitempty"`
	State       TenantState `json:"state"`
	CreatedAt   time.Time   `json:"created_at"`
}

// Node is a shared physical server. Its BMC password is never part of the
// record: it lives in the secret store.
type Node struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	MACs        []string `json:"macs"`
	BMC         BMC      `json:"bmc"`
	// TenantBMCAddress is the node's tenant-facing BMC address: a bare
	// IPv4 address from the configured range, stable and unique while the
	// node exists, that tenants' Foremans store on the host's BMC
	// interface. It is never the real BMC's address.
	TenantBMCAddress string    `json:"tenant_bmc_address"`
	CreatedAt        time.Time `json:"created_at"`
}

// BMC is how the appliance reaches a node's baseboard management controller.
type BMC struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user,omitempty"`
}

// Address returns the BMC as host:port, bracketing IPv6 literals.
func (b BMC) Address() string {
	return net.JoinHostPort(b.Host, strconv.Itoa(b.Port))
}

// FieldError reports that one field of an input is invalid. Field names the
// input field (a JSON key or an INI section.key).
type FieldError struct {
	Field  string
	Reason string
}

// Error returns "field: reason".
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Fields returns the names of every invalid field in err, which may join
// several errors.
func Fields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, fe.Field)
		}
	}
	walk(err)
	return out
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName checks that name is a DNS label of at most MaxNameLen
// characters: lower-case letters, digits and inner hyphens. Names end up in
// Docker networks, IQNs, certificate names and file names, so nothing else
// is allowed.
func ValidateName(field, name string) error {
	switch {
	case name == "":
		return &FieldError{field, "is required"}
	case len(name) > MaxNameLen:
		return &FieldError{field, fmt.Sprintf("must be at most %d characters, got %d", MaxNameLen, len(name))}
	case !labelRE.MatchString(name):
		return &FieldError{field, fmt.Sprintf("%q is not a DNS label: use a-z, 0-9 and '-', starting and ending with a letter or digit", name)}
	}
	return nil
}

// NormalizeMAC parses a 48-bit MAC address in any common notation
// (aa:bb:.., aa-bb-.., aabb.ccdd.eeff) and returns it lower-case and
// colon-separated.
func NormalizeMAC(field, s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", &FieldError{field, fmt.Sprintf("%q is not a 48-bit MAC address", s)}
	}
	return hw.String(), nil
}

// NormalizeMACs normalises every address, rejecting duplicates, and returns
// them sorted.
func NormalizeMACs(field string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	var errs []error
	for i, s := range in {
		m, err := NormalizeMAC(fmt.Sprintf("%s[%d]", field, i), s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.Contains(out, m) {
			errs = append(errs, &FieldError{fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%s is listed twice", m)})
			continue
		}
		out = append(out, m)
	}
	slices.Sort(out)
	return out, errors.Join(errs...)
}

var hostnameRE = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

// ParseHostPort parses host[:port] where host is an IP address or a DNS
// name, applying defaultPort when none is given. IPv6 literals with a port
// must be bracketed.
func ParseHostPort(field, s string, defaultPort int) (string, int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", 0, &FieldError{field, "is required"}
	}
	host, port := s, defaultPort
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), int(ap.Port()), nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		if a.Zone() != "" {
			return "", 0, &FieldError{field, fmt.Sprintf("%q: zoned addresses are not supported", s)}
		}
		return a.String(), port, nil
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, perr := strconv.Atoi(p)
		if perr != nil || n < 1 || n > 65535 {
			return "", 0, &FieldError{field, fmt.Sprintf("%q: port must be 1-65535", s)}
		}
		host, port = h, n
	}
	if len(host) > 253 || !hostnameRE.MatchString(host) {
		return "", 0, &FieldError{field, fmt.Sprintf("%q is not host[:port] with an IP address or DNS name", s)}
	}
	return strings.ToLower(host), port, nil
}

// ValidateURL checks that s is an absolute http or https URL with a host
// and no credentials.
func ValidateURL(field, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &FieldError{field, fmt.Sprintf("%q is not an absolute http(s) URL", s)}
	}
	if u.User != nil {
		return &FieldError{field, "must not carry credentials: they belong in the secret store"}
	}
	return nil
}

// ValidateText checks a free-text field: printable, single line, bounded.
func ValidateText(field, s string, max int) error {
	if len(s) > max {
		return &FieldError{field, fmt.Sprintf("must be at most %d bytes", max)}
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return &FieldError{field, "must not contain control characters"}
		}
	}
	return nil
}

// Normalize validates every field of t and puts it in canonical form. It
// reports all problems at once.
func (t *Tenant) Normalize() error {
	errs := []error{
		ValidateName("name", t.Name),
		ValidateText("description", t.Description, 200),
	}
	if t.ForemanURL != "" {
		errs = append(errs, ValidateURL("foreman_url", t.ForemanURL))
	}
	return errors.Join(errs...)
}

// Normalize validates every field of n and puts it in canonical form:
// sorted lower-case MACs and a BMC with an explicit port. It reports all
// problems at once.
func (n *Node) Normalize() error {
	errs := []error{
		ValidateName("name", n.Name),
		ValidateText("description", n.Description, 200),
	}
	macs, err := NormalizeMACs("macs", n.MACs)
	errs = append(errs, err)
	n.MACs = macs
	if n.BMC.Host != "" || n.BMC.Port != 0 || n.BMC.User != "" {
		addr := n.BMC.Host
		if n.BMC.Port != 0 {
			addr = net.JoinHostPort(n.BMC.Host, strconv.Itoa(n.BMC.Port))
		}
		host, port, err := ParseHostPort("bmc.host", addr, DefaultBMCPort)
		errs = append(errs, err)
		n.BMC.Host, n.BMC.Port = host, port
		if n.BMC.User == "" || len(n.BMC.User) > 16 {
			// IPMI 2.0 user names are 1-16 bytes.
			errs = append(errs, &FieldError{"bmc.user", "must be 1-16 characters (IPMI user name)"})
		} else {
			errs = append(errs, ValidateText("bmc.user", n.BMC.User, 16))
		}
	}
	return errors.Join(errs...)
}

// ValidateTenantBMCRange checks a range for tenant-facing BMC addresses:
// an IPv4 network in canonical form (no host bits) holding at least two
// usable addresses (/8 to /30).
func ValidateTenantBMCRange(field string, p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p || p.Bits() < 8 || p.Bits() > 30 {
		return &FieldError{field, fmt.Sprintf("%q is not an IPv4 network from /8 to /30 without host bits, such as 198.18.0.0/15", p)}
	}
	return nil
}

// ParseTenantBMCAddress parses a tenant-facing BMC address: a bare IPv4
// address (what Foreman accepts on a BMC interface: no name, no port)
// inside p, neither its network nor its broadcast address.
func ParseTenantBMCAddress(field, s string, p netip.Prefix) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || a.String() != s {
		return a, &FieldError{field, fmt.Sprintf("%q is not a bare IPv4 address (Foreman accepts nothing else on a BMC interface)", s)}
	}
	if !p.Contains(a) || a == p.Addr() || !p.Contains(a.Next()) {
		return a, &FieldError{field, fmt.Sprintf("%s is not a host address of the tenant-facing BMC range %s", s, p)}
	}
	return a, nil
}
