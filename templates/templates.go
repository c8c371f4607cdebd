// Package templates renders the boot scripts and provisioning templates that
// Malleable hands to nodes and to Foreman: the iPXE script that SAN-boots a
// node from its tenant's iSCSI disk, and the equivalent Foreman iPXE
// provisioning template. The files are embedded, so the binary carries them.
package templates

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"text/template"
)

// files holds every template, read-only. go:embed needs a package-level
// variable; nothing ever writes it.
//
//go:embed ipxe/sanboot.ipxe.tmpl foreman/m2_sanboot.ipxe.erb
var files embed.FS

// ErrInvalid is wrapped by every validation error, so that callers can answer
// 4xx with errors.Is(err, templates.ErrInvalid).
var ErrInvalid = errors.New("invalid boot parameter")

// Defaults applied by RenderSANBoot to zero fields of SANBoot.
const (
	DefaultPort       = 3260 // iSCSI's well-known port (RFC 7143)
	DefaultLUN        = 1    // tgt's LUN 0 is its controller; the disk is LUN 1
	DefaultRetryDelay = 10   // seconds, as Ironic's boot-from-volume script
)

// ForemanSANBootName is the name of the Foreman provisioning template
// returned by ForemanSANBoot, as its metadata header declares it. A host that
// always SAN-boots stays out of build mode with the host parameter
// local_boot_iPXE set to this name.
const ForemanSANBootName = "M2 SAN boot iPXE"

// SANBoot describes the iSCSI disk a node boots from and the credentials it
// logs in with. Zero Port, LUN and RetryDelay take their defaults; every
// other field is required.
type SANBoot struct {
	// InitiatorIQN is the node's iSCSI name, which the target's ACL admits:
	// iqn.<yyyy-mm>.<reversed-domain>[:<unique>].
	InitiatorIQN string
	// CHAPUser and CHAPSecret are the target's one-way CHAP account. Both
	// are [A-Za-z0-9._-] and do not start with '-'; the secret is 12 to 255
	// characters (hex or unpadded base64url fit).
	CHAPUser   string
	CHAPSecret string
	// Portal is the target's IPv4 address or DNS name, as the node sees it.
	Portal string
	// Port is the portal's TCP port; default 3260.
	Port int
	// LUN is the disk's logical unit, 1 to 255; default 1. iPXE reads it in
	// hex, which RenderSANBoot takes care of. LUN 0 cannot be expressed: on
	// tgt it is the controller, never a disk.
	LUN int
	// TargetIQN is the target's iSCSI name, in the same form as InitiatorIQN.
	TargetIQN string
	// RetryDelay is how long the node waits, in seconds, before retrying a
	// failed sanboot; 1 to 3600, default 10.
	RetryDelay int
}

// sanbootData is what the iPXE template sees: validated fields only.
type sanbootData struct {
	InitiatorIQN, CHAPUser, CHAPSecret string
	URI                                string
	RetryDelay                         int
}

// RenderSANBoot writes the iPXE script that SAN-boots a node from s
// (ARCHITECTURE.md §4.4): it sets keep-san, the initiator IQN and the CHAP
// credentials, then loops over `sanboot --keep` until it succeeds. Every
// field is validated before anything is rendered, so that no value can add
// an iPXE command, a settings expansion or a second argument; on any error
// nothing is written to w. Validation errors wrap ErrInvalid and never
// include the CHAP secret.
func RenderSANBoot(w io.Writer, s SANBoot) error {
	s = s.withDefaults()
	if err := s.validate(); err != nil {
		return err
	}
	tmpl, err := template.New("sanboot.ipxe.tmpl").Option("missingkey=error").
		ParseFS(files, "ipxe/sanboot.ipxe.tmpl")
	if err != nil {
		return fmt.Errorf("parse sanboot template: %w", err)
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, sanbootData{
		InitiatorIQN: s.InitiatorIQN,
		CHAPUser:     s.CHAPUser,
		CHAPSecret:   s.CHAPSecret,
		URI:          s.uri(),
		RetryDelay:   s.RetryDelay,
	})
	if err != nil {
		return fmt.Errorf("render sanboot script: %w", err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write sanboot script: %w", err)
	}
	return nil
}

// Validate reports whether RenderSANBoot would accept s, after defaults. The
// error joins one error per bad field, each wrapping ErrInvalid.
func (s SANBoot) Validate() error {
	return s.withDefaults().validate()
}

// withDefaults returns s with zero Port, LUN and RetryDelay set.
func (s SANBoot) withDefaults() SANBoot {
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.LUN == 0 {
		s.LUN = DefaultLUN
	}
	if s.RetryDelay == 0 {
		s.RetryDelay = DefaultRetryDelay
	}
	return s
}

// uri is iPXE's iSCSI root path, iscsi:<server>:<protocol>:<port>:<lun>:<target>
// (https://ipxe.org/sanuri): the protocol field is ignored and left empty, as
// Ironic does, and the LUN is hexadecimal, so LUN 10 is "a". For LUNs up to
// 255 iPXE's single-level hex LUN is the SAM peripheral address 00xx, which
// is what tgt numbers its logical units by.
func (s SANBoot) uri() string {
	return fmt.Sprintf("iscsi:%s::%d:%x:%s", s.Portal, s.Port, s.LUN, s.TargetIQN)
}

// ForemanSANBoot returns the Foreman iPXE provisioning template (ERB) named
// ForemanSANBootName, with its metadata header, ready to upload or seed. It
// is the M2 prototype's template (foreman_m2: `set keep-san 1`, `sanboot
// --keep <%= @host.iscsi_target %> || shell`), plus the initiator IQN and
// CHAP credentials from host parameters when they are set. Foreman renders
// it, so its values are not validated here: prefer a script from
// RenderSANBoot, served by the smart-proxy.
func ForemanSANBoot() string {
	b, err := files.ReadFile("foreman/m2_sanboot.ipxe.erb")
	if err != nil {
		// The file is embedded at build time; a missing one is a build bug.
		panic(fmt.Sprintf("templates: embedded Foreman template: %v", err))
	}
	return string(b)
}
