// Package storage keeps the M2 backend's volumes — golden images, tenant
// disks and snapshots — as named objects under a root directory the
// appliance owns. Driver is the contract; File is the implementation on a
// local filesystem (a reflink clone where the filesystem offers one, else a
// sparse-aware copy). A copy-on-write qcow2-overlay driver and a Ceph RBD
// driver can sit behind the same contract later.
package storage

import (
	"context"
	"errors"
	"io"
)

// Driver stores volumes (golden images, disks, snapshots) by opaque name
// under a root the appliance owns. Names follow ValidateName. Every method
// is safe for concurrent use, and every method that creates a volume
// publishes it atomically: it either exists complete or not at all, also
// after an error, a cancelled context or a crash.
type Driver interface {
	// Import streams src into a new volume of size bytes (size < 0: read
	// src to EOF). Runs of zero blocks stay holes. ErrExists if the name
	// is taken.
	Import(ctx context.Context, name string, src io.Reader, size int64) (Volume, error)
	// ImportFile creates a volume from a file on the server: a reflink
	// clone where possible, else a sparse-aware copy.
	ImportFile(ctx context.Context, name, path string) (Volume, error)
	// Clone copies volume src into the new volume dst (create_disk,
	// snapshots): O(1) where the storage clones, else proportional to the
	// data (never to the holes). ErrNotFound for a missing src, ErrExists
	// for a taken dst; of concurrent clones to one dst exactly one wins.
	Clone(ctx context.Context, src, dst string) (Volume, error)
	// Remove deletes a volume; removing a missing one is not an error.
	Remove(ctx context.Context, name string) error
	// Stat describes a volume, or fails with ErrNotFound.
	Stat(ctx context.Context, name string) (Volume, error)
	// List describes every volume, sorted by name.
	List(ctx context.Context) ([]Volume, error)
	// Checksum returns the lowercase hex SHA-256 of a volume's content
	// (holes read as zeros), for verifying golden images.
	Checksum(ctx context.Context, name string) (string, error)
	// Path returns the backing file the iSCSI target serves, or
	// ErrNotFound when there is no such volume.
	Path(name string) (string, error)
}

// Volume describes a stored volume.
type Volume struct {
	// Name is the volume's name, such as "disks/acme.web-1".
	Name string
	// Size is the apparent size in bytes: what a node sees as its disk.
	Size int64
	// Allocated is the space the volume holds on disk (st_blocks*512).
	// Blocks a reflink clone shares with its source count for both.
	Allocated int64
	// CloneMethod is how the volume was made: MethodReflink,
	// MethodSparseCopy or MethodImport; empty when unknown (the filesystem
	// keeps no extended attributes, or the file was placed by hand).
	CloneMethod string
}

// Clone methods reported in Volume.CloneMethod.
const (
	// MethodReflink is a copy-on-write clone sharing the source's blocks
	// (FICLONE on XFS with reflink=1, btrfs, bcachefs, ...): O(1) in data.
	MethodReflink = "reflink"
	// MethodSparseCopy is a copy of the source's data extents only
	// (SEEK_DATA/SEEK_HOLE); holes and all-zero blocks stay holes.
	MethodSparseCopy = "sparse-copy"
	// MethodImport is a volume streamed in by Import.
	MethodImport = "import"
)

// Errors; match them with errors.Is.
var (
	// ErrNotFound means there is no volume by that name.
	ErrNotFound = errors.New("volume not found")
	// ErrExists means a volume (or a namespace directory) already has
	// that name.
	ErrExists = errors.New("volume exists")
	// ErrInvalidName means the name breaks the rules of ValidateName.
	ErrInvalidName = errors.New("invalid volume name")
	// ErrLocked means another File, in this or another process, owns the
	// root.
	ErrLocked = errors.New("storage root in use by another process")
)
