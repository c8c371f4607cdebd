// Package m2 holds the types of Malleable's M2 storage API: golden images,
// per-project disks cloned from them, snapshots, and the iSCSI targets nodes
// boot from — and the one Go client of that API. The backend is
// appliance/m2/server.
package m2

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Image is a golden image: admin-managed, cloned into projects' disks.
type Image struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	Allocated int64     `json:"allocated"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
}

// Disk is a project's clone of an image or snapshot, presented as an iSCSI
// target. Node is set while the disk is attached to a node.
type Disk struct {
	Project   string    `json:"project"`
	Name      string    `json:"name"`
	Source    string    `json:"source"` // "image:<name>" or "snapshot:<name>"
	Size      int64     `json:"size"`
	Allocated int64     `json:"allocated"`
	Target    Target    `json:"target"`
	Node      string    `json:"node,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Target is how a node reaches a disk over iSCSI. The CHAP secret is never
// part of it: it is in the boot script only.
type Target struct {
	Portal   string `json:"portal"` // host:port
	IQN      string `json:"iqn"`
	LUN      int    `json:"lun"`
	CHAPUser string `json:"chap_user"`
	// Initiator is the IQN the target admits: the attached node's.
	Initiator string `json:"initiator,omitempty"`
}

// Snapshot is a point-in-time copy of a disk, usable as the source of new
// disks of the same project (fast re-provisioning).
type Snapshot struct {
	Project   string    `json:"project"`
	Name      string    `json:"name"`
	Disk      string    `json:"disk"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// Attachment is the result of attaching a disk to a node: the token that
// fetches the node's boot script, which rotates with every attach.
type Attachment struct {
	Disk      string `json:"disk"`
	Node      string `json:"node"`
	Initiator string `json:"initiator"`
	BootToken string `json:"boot_token"`
}

// Sentinel errors; match them with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInvalid  = errors.New("invalid")
	ErrInUse    = errors.New("in use")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateName checks an image, disk or snapshot name:
// [a-z0-9][a-z0-9._-]{0,62}, no "..". Names become file names and IQNs,
// so nothing else passes.
func ValidateName(field, name string) error {
	if !nameRE.MatchString(name) || containsDotDot(name) {
		return fmt.Errorf("%w: %s %q must be 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit, without \"..\"", ErrInvalid, field, name)
	}
	return nil
}

var diskNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

// ValidateDiskName checks a disk or snapshot name. Disk names become part
// of IQNs, which tgtd refuses with '_', so they are image names without it.
func ValidateDiskName(field, name string) error {
	if !diskNameRE.MatchString(name) || containsDotDot(name) {
		return fmt.Errorf("%w: %s %q must be 1-63 characters of a-z, 0-9, '.' and '-', starting with a letter or digit, without \"..\"", ErrInvalid, field, name)
	}
	return nil
}

var projectRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// ValidateProject checks a project name: a DNS label of at most 40
// characters, like a tenant's.
func ValidateProject(p string) error {
	if !projectRE.MatchString(p) {
		return fmt.Errorf("%w: project %q must be a DNS label of at most 40 characters", ErrInvalid, p)
	}
	return nil
}

func containsDotDot(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '.' && s[i+1] == '.' {
			return true
		}
	}
	return false
}
