// Package iscsi drives tgtd, the Linux SCSI target daemon, through tgtadm:
// it makes tgtd serve one iSCSI target per disk, each with its backing file
// as LUN 1, its own one-way CHAP account and an initiator-name ACL, and it
// can run an appliance-owned tgtd as a child process (StartTgtd).
//
// tgtadm is run with an argument vector, never through a shell, and every
// value is validated before it reaches that vector. tgtd keeps its state in
// memory only: after it restarts, Reconcile re-creates every target from the
// caller's metadata. The M2 storage backend is the only intended importer.
package iscsi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"time"
)

// DefaultTimeout bounds one tgtadm call when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalid means an argument broke a rule (IQN, path, CHAP, port);
	// nothing was sent to tgtd.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound means tgtd has no such target, logical unit, account or
	// ACL entry.
	ErrNotFound = errors.New("not found in tgtd")
	// ErrExists means tgtd already has the target ID or name, logical
	// unit, account or ACL entry.
	ErrExists = errors.New("already exists in tgtd")
	// ErrBusy means tgtd refused because a target or logical unit still
	// has commands in flight.
	ErrBusy = errors.New("busy in tgtd")
	// ErrNoDaemon means no tgtd answers on the control port.
	ErrNoDaemon = errors.New("no tgtd on the control port")
	// ErrConflict means the target's CHAP account is bound to another
	// target; accounts are global in tgtd, so two targets cannot own one.
	ErrConflict = errors.New("chap account belongs to another target")
	// ErrControlPortInUse means another tgtd holds the control port's lock.
	ErrControlPortInUse = errors.New("tgtd control port in use")
	// ErrPortalInUse means tgtd could not listen on the requested portal.
	ErrPortalInUse = errors.New("iscsi portal in use")
)

// Target is one iSCSI target as the caller wants it.
type Target struct {
	// IQN is the target name: iqn.<yyyy-mm>.<reversed-domain>[:<unique>],
	// lower case, only [a-z0-9.:-] (tgtd refuses '_'), at most 223 bytes.
	IQN string
	// Backing is the absolute, clean path of an existing regular file (or
	// a symbolic link to one) that tgtd serves as LUN 1.
	Backing string
	// CHAPUser is the target's incoming CHAP account: 1-64 characters of
	// [A-Za-z0-9._-], not starting with '-'. Accounts are global in tgtd,
	// so each target needs its own.
	CHAPUser string
	// CHAPSecret is 12-16 characters of [A-Za-z0-9._-], not starting with
	// '-': the range Windows' initiator enforces and iPXE and libiscsi
	// accept, in characters that iPXE scripts and iscsi:// URLs take
	// literally. It is never logged nor part of an error.
	CHAPSecret string
	// Initiators are the initiator IQNs that may log in. Empty means that
	// nobody may (the driver never binds tgtd's "ALL").
	Initiators []string
}

// String names the target by its IQN; the secret is never part of it.
func (t Target) String() string { return t.IQN }

// GoString keeps %#v from printing the secret.
func (t Target) GoString() string {
	return fmt.Sprintf("iscsi.Target{IQN:%q, Backing:%q, CHAPUser:%q, CHAPSecret:<redacted>, Initiators:%q}",
		t.IQN, t.Backing, t.CHAPUser, t.Initiators)
}

// LogValue logs everything but the secret.
func (t Target) LogValue() slog.Value {
	return slog.GroupValue(slog.String("iqn", t.IQN), slog.String("backing", t.Backing),
		slog.String("chap_user", t.CHAPUser), slog.Any("initiators", t.Initiators))
}

// Status is one target as tgtd reports it (`tgtadm --op show`).
type Status struct {
	TID   int
	IQN   string
	State string // "ready" or "offline"
	// LUNs are the logical units except LUN 0, tgtd's controller.
	LUNs []LUN
	// Accounts are the bound incoming (CHAP) accounts; Outgoing the bound
	// outgoing (mutual CHAP) ones, which this driver never binds.
	Accounts []string
	Outgoing []string
	// Initiators are the initiator names of the ACL; Addresses its address
	// entries ("ALL", an address or a prefix), which this driver never
	// binds because tgtd grants a login that matches either list.
	Initiators []string
	Addresses  []string
	// Sessions are the connected initiators (tgtd's I_T nexus list).
	Sessions []Session
}

// LUN is one logical unit of a target.
type LUN struct {
	Number  int
	Type    string // "disk" for file-backed units
	Backing string // "Backing store path"
	Serial  string // "SCSI SN", which the driver derives from the IQN
}

// Session is one I_T nexus: a logged-in initiator and its connections.
type Session struct {
	Nexus     int
	Initiator string
	Addresses []string // the initiator's address, one per connection
}

// Options configure a Driver and StartTgtd. The zero value is usable for a
// Driver of the distribution's tgtd (control port 0).
type Options struct {
	// TgtadmPath is the tgtadm binary; default "tgtadm" from PATH, else
	// /usr/sbin/tgtadm.
	TgtadmPath string
	// TgtdPath is the tgtd binary (StartTgtd only); default like TgtadmPath.
	TgtdPath string
	// Portal is the address:port tgtd listens on for iSCSI (StartTgtd
	// only), such as "127.0.0.1:3260" or "[::1]:3260". Required there.
	Portal string
	// ControlPort is tgtd's -C: 0 to 32767. It names a Unix socket and a
	// lock file under /var/run/tgtd, not a TCP port; 0 is the one the
	// distribution's tgt service uses.
	ControlPort int
	// Logger receives debug lines per tgtadm call and info lines per
	// change; default slog.Default().
	Logger *slog.Logger
	// Timeout bounds each tgtadm call, and StartTgtd's wait for tgtd to
	// answer; default DefaultTimeout.
	Timeout time.Duration
}

// MaxControlPort is the largest -C tgtd and tgtadm accept (they keep it in
// a C short).
const MaxControlPort = 32767

// Driver manages the targets of one tgtd through tgtadm. It assumes that it
// is the only writer of that tgtd. Its methods are safe for concurrent use;
// they run one at a time.
type Driver struct {
	tgtadm  string
	port    int
	log     *slog.Logger
	timeout time.Duration
	optErr  error

	mu sync.Mutex
	// secrets holds an HMAC of the secret each account was last created
	// with by this Driver, so that Apply can tell a rotation from a no-op:
	// tgtd never shows a secret back.
	secrets map[string][sha256.Size]byte
	key     []byte
	// observe, when set (by tests), sees every tgtadm argument vector.
	observe func(args []string)
}

// New returns a Driver for the tgtd on opts.ControlPort. Invalid options
// make every method fail with ErrInvalid.
func New(opts Options) *Driver {
	opts = opts.withDefaults()
	d := &Driver{
		tgtadm:  opts.TgtadmPath,
		port:    opts.ControlPort,
		log:     opts.Logger,
		timeout: opts.Timeout,
		secrets: make(map[string][sha256.Size]byte),
		key:     make([]byte, 32),
	}
	rand.Read(d.key)
	if opts.ControlPort < 0 || opts.ControlPort > MaxControlPort {
		d.optErr = fmt.Errorf("%w: control port %d is outside 0..%d", ErrInvalid, opts.ControlPort, MaxControlPort)
	}
	return d
}

func (o Options) withDefaults() Options {
	if o.TgtadmPath == "" {
		o.TgtadmPath = findTool("tgtadm")
	}
	if o.TgtdPath == "" {
		o.TgtdPath = findTool("tgtd")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

// findTool prefers PATH and falls back to /usr/sbin, which is not on the
// PATH of every service manager or non-root shell.
func findTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}

func (d *Driver) secretDigest(secret string) [sha256.Size]byte {
	m := hmac.New(sha256.New, d.key)
	m.Write([]byte(secret))
	var sum [sha256.Size]byte
	copy(sum[:], m.Sum(nil))
	return sum
}
