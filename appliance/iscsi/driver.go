package iscsi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// diskLUN is the LUN that carries the disk: tgtd's LUN 0 is its controller.
const diskLUN = 1

// Remove retries a busy delete this many times, waiting busyWait between.
const (
	busyRetries = 20
	busyWait    = 50 * time.Millisecond
)

// state is what tgtd holds, as read by one pair of show calls and then kept
// up to date by the changes the driver makes.
type state struct {
	targets  []*Status
	accounts map[string]bool
}

func (s *state) byIQN(iqn string) *Status {
	for _, t := range s.targets {
		if t.IQN == iqn {
			return t
		}
	}
	return nil
}

// freeTID returns the lowest target ID that is not in use.
func (s *state) freeTID() int {
	used := make(map[int]bool, len(s.targets))
	for _, t := range s.targets {
		used[t.TID] = true
	}
	tid := 1
	for used[tid] {
		tid++
	}
	return tid
}

// accountOwner returns a target other than iqn that has user bound.
func (s *state) accountOwner(user, iqn string) *Status {
	for _, t := range s.targets {
		if t.IQN != iqn && (slices.Contains(t.Accounts, user) || slices.Contains(t.Outgoing, user)) {
			return t
		}
	}
	return nil
}

func (d *Driver) snapshot(ctx context.Context) (*state, error) {
	out, err := d.run(ctx, "target show", "--lld", "iscsi", "--mode", "target", "--op", "show")
	if err != nil {
		return nil, err
	}
	targets, err := parseTargets(out)
	if err != nil {
		return nil, err
	}
	out, err = d.run(ctx, "account show", "--lld", "iscsi", "--mode", "account", "--op", "show")
	if err != nil {
		return nil, err
	}
	st := &state{accounts: make(map[string]bool)}
	for i := range targets {
		st.targets = append(st.targets, &targets[i])
	}
	for _, a := range parseAccounts(out) {
		st.accounts[a] = true
	}
	// An account tgtd no longer has (it restarted) must be created again.
	for user := range d.secrets {
		if !st.accounts[user] {
			delete(d.secrets, user)
		}
	}
	return st, nil
}

// List returns the targets tgtd holds, by target ID.
func (d *Driver) List(ctx context.Context) ([]Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out, err := d.run(ctx, "target show", "--lld", "iscsi", "--mode", "target", "--op", "show")
	if err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	targets, err := parseTargets(out)
	if err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	slices.SortFunc(targets, func(a, b Status) int { return a.TID - b.TID })
	return targets, nil
}

// Apply makes tgtd serve t, creating the target or correcting it: LUN 1 is
// t.Backing (other LUNs are removed), t.CHAPUser is the one bound incoming
// account, and the ACL holds exactly t.Initiators. A new target gets the
// lowest free target ID. Applying the same Target again changes nothing
// and costs two tgtadm calls (the listings); a changed secret re-creates
// the account, with the ACL emptied meanwhile so that the target is never
// open without CHAP. Sessions already logged in are not disconnected.
func (d *Driver) Apply(ctx context.Context, t Target) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("apply target %s: %w", t.IQN, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.snapshot(ctx)
	if err != nil {
		return fmt.Errorf("apply target %s: %w", t.IQN, err)
	}
	return d.apply(ctx, st, t)
}

func (d *Driver) apply(ctx context.Context, st *state, t Target) error {
	log := d.log.With("iqn", t.IQN)
	if owner := st.accountOwner(t.CHAPUser, t.IQN); owner != nil {
		return fmt.Errorf("apply target %s: %w: account %q is bound to %s (tid %d)",
			t.IQN, ErrConflict, t.CHAPUser, owner.IQN, owner.TID)
	}
	// A target bound to someone else's account is re-created rather than
	// repaired: tgtd 1.0.85 crashes on the next listing after an account
	// that is not the last bound one is unbound.
	if cur := st.byIQN(t.IQN); cur != nil && slices.ContainsFunc(cur.Accounts, func(a string) bool { return a != t.CHAPUser }) {
		if err := d.remove(ctx, st, cur); err != nil {
			return fmt.Errorf("apply target %s: re-create a target with a foreign account: %w", t.IQN, err)
		}
	}
	cur, err := d.ensureTarget(ctx, st, t.IQN)
	if err != nil {
		return fmt.Errorf("apply target %s: %w", t.IQN, err)
	}
	log = log.With("tid", cur.TID)
	steps := []func(context.Context, *state, *Status, Target) (string, error){
		d.ensureReady, d.ensureLUN, d.ensureAccount, d.ensureACL,
	}
	for _, step := range steps {
		change, err := step(ctx, st, cur, t)
		if err != nil {
			return fmt.Errorf("apply target %s (tid %d): %w", t.IQN, cur.TID, err)
		}
		if change != "" {
			log.Info("iscsi target changed", "change", change)
		}
	}
	return nil
}

// ensureTarget returns the target named iqn, creating it with the lowest
// free ID. A new target has an empty ACL, so nobody may log in yet. When
// another writer took the ID (or created the name) meanwhile, it lists again
// and retries.
func (d *Driver) ensureTarget(ctx context.Context, st *state, iqn string) (*Status, error) {
	for attempt := 0; ; attempt++ {
		if cur := st.byIQN(iqn); cur != nil {
			return cur, nil
		}
		tid := st.freeTID()
		_, err := d.run(ctx, "target new", "--lld", "iscsi", "--mode", "target", "--op", "new",
			"--tid", strconv.Itoa(tid), "--targetname", iqn)
		if err == nil {
			cur := &Status{TID: tid, IQN: iqn, State: "ready"}
			st.targets = append(st.targets, cur)
			d.log.Info("iscsi target created", "iqn", iqn, "tid", tid)
			return cur, nil
		}
		if !errors.Is(err, ErrExists) || attempt == 2 {
			return nil, fmt.Errorf("create target (tid %d): %w", tid, err)
		}
		fresh, lerr := d.snapshot(ctx)
		if lerr != nil {
			return nil, fmt.Errorf("create target (tid %d): %w; list again: %w", tid, err, lerr)
		}
		*st = *fresh
	}
}

// ensureReady brings back a target that an interrupted Remove left offline.
func (d *Driver) ensureReady(ctx context.Context, _ *state, cur *Status, _ Target) (string, error) {
	if cur.State == "" || cur.State == "ready" {
		return "", nil
	}
	if err := d.setState(ctx, cur.TID, "ready"); err != nil {
		return "", err
	}
	cur.State = "ready"
	return "state ready", nil
}

// ensureLUN makes LUN 1 the backing file, with a serial number derived
// from the IQN so that a re-created target shows initiators the same disk
// whatever its target ID, and removes every other LUN.
func (d *Driver) ensureLUN(ctx context.Context, _ *state, cur *Status, t Target) (string, error) {
	var change string
	keep := cur.LUNs[:0]
	for _, l := range cur.LUNs {
		if l.Number == diskLUN && l.Backing == t.Backing {
			keep = append(keep, l)
			continue
		}
		if err := d.deleteLUN(ctx, cur.TID, l.Number); err != nil {
			return "", err
		}
		change = fmt.Sprintf("removed LUN %d (%s)", l.Number, l.Backing)
	}
	cur.LUNs = keep
	serial := serialFor(t.IQN)
	if len(keep) == 0 {
		if _, err := d.run(ctx, "logicalunit new", "--lld", "iscsi", "--mode", "logicalunit", "--op", "new",
			"--tid", strconv.Itoa(cur.TID), "--lun", strconv.Itoa(diskLUN), "--backing-store", t.Backing); err != nil {
			return "", fmt.Errorf("add LUN %d: %w", diskLUN, err)
		}
		cur.LUNs = append(cur.LUNs, LUN{Number: diskLUN, Type: "disk", Backing: t.Backing})
		change = "LUN 1 = " + t.Backing
	}
	if l := &cur.LUNs[0]; l.Serial != serial {
		if _, err := d.run(ctx, "logicalunit update", "--lld", "iscsi", "--mode", "logicalunit", "--op", "update",
			"--tid", strconv.Itoa(cur.TID), "--lun", strconv.Itoa(diskLUN),
			"--params", "scsi_id="+serial+",scsi_sn="+serial); err != nil {
			return "", fmt.Errorf("set serial of LUN %d: %w", diskLUN, err)
		}
		l.Serial = serial
		if change == "" {
			change = "LUN 1 serial " + serial
		}
	}
	return change, nil
}

// serialFor derives LUN 1's SCSI ID and serial number from the IQN: 24 hex
// digits (tgtd truncates both at 36 characters).
func serialFor(iqn string) string {
	sum := sha256.Sum256([]byte(iqn))
	return hex.EncodeToString(sum[:12])
}

// ensureAccount binds t.CHAPUser with t.CHAPSecret as the target's only
// account. tgtd never shows a secret, so the account is (re)created when
// this Driver has not created it with this secret before. tgtd silently
// unbinds a deleted account from its targets, and a target without an
// incoming account needs no CHAP at all, so the ACL is emptied first: the
// target stays closed until ensureACL binds the initiators again.
func (d *Driver) ensureAccount(ctx context.Context, st *state, cur *Status, t Target) (string, error) {
	var change string
	digest := d.secretDigest(t.CHAPSecret)
	if known, ok := d.secrets[t.CHAPUser]; !st.accounts[t.CHAPUser] || !ok || known != digest {
		if err := d.closeACL(ctx, cur); err != nil {
			return "", err
		}
		if st.accounts[t.CHAPUser] {
			if err := d.deleteAccount(ctx, st, t.CHAPUser); err != nil {
				return "", err
			}
			change = "CHAP account re-created"
		} else {
			change = "CHAP account created"
		}
		// The argument vector holds the secret while tgtadm runs: tgtadm
		// reads it nowhere else. Logs redact it.
		if _, err := d.run(ctx, "account new", "--lld", "iscsi", "--mode", "account", "--op", "new",
			"--user", t.CHAPUser, "--password", t.CHAPSecret); err != nil {
			return "", fmt.Errorf("create account %q: %w", t.CHAPUser, err)
		}
		st.accounts[t.CHAPUser] = true
		d.secrets[t.CHAPUser] = digest
		for _, o := range st.targets {
			o.Accounts = slices.DeleteFunc(o.Accounts, func(a string) bool { return a == t.CHAPUser })
		}
	}
	if !slices.Contains(cur.Accounts, t.CHAPUser) {
		if _, err := d.run(ctx, "account bind", "--lld", "iscsi", "--mode", "account", "--op", "bind",
			"--tid", strconv.Itoa(cur.TID), "--user", t.CHAPUser); err != nil {
			return "", fmt.Errorf("bind account %q: %w", t.CHAPUser, err)
		}
		cur.Accounts = append(cur.Accounts, t.CHAPUser)
		if change == "" {
			change = "CHAP account bound"
		}
	}
	// Only now, with ours bound, can other accounts go without opening
	// the target.
	for _, a := range slices.Clone(cur.Accounts) {
		if a != t.CHAPUser {
			if err := d.unbindAccount(ctx, cur, a, false); err != nil {
				return "", err
			}
			change = "foreign account unbound"
		}
	}
	for _, a := range slices.Clone(cur.Outgoing) {
		if err := d.unbindAccount(ctx, cur, a, true); err != nil {
			return "", err
		}
		change = "outgoing account unbound"
	}
	return change, nil
}

// ensureACL makes the ACL exactly t.Initiators: revocations first, then
// additions. Address entries are removed, because tgtd admits a login that
// matches an address entry whatever its initiator name.
func (d *Driver) ensureACL(ctx context.Context, _ *state, cur *Status, t Target) (string, error) {
	want := normalizeInitiators(t.Initiators)
	var change string
	for _, a := range slices.Clone(cur.Addresses) {
		if err := d.unbindACL(ctx, cur, a, true); err != nil {
			return "", err
		}
		change = "ACL changed"
	}
	for _, n := range slices.Clone(cur.Initiators) {
		if !slices.Contains(want, n) {
			if err := d.unbindACL(ctx, cur, n, false); err != nil {
				return "", err
			}
			change = "ACL changed"
		}
	}
	for _, n := range want {
		if slices.Contains(cur.Initiators, n) {
			continue
		}
		if _, err := d.run(ctx, "target bind", "--lld", "iscsi", "--mode", "target", "--op", "bind",
			"--tid", strconv.Itoa(cur.TID), "--initiator-name", n); err != nil && !errors.Is(err, ErrExists) {
			return "", fmt.Errorf("allow initiator %s: %w", n, err)
		}
		cur.Initiators = append(cur.Initiators, n)
		change = "ACL changed"
	}
	return change, nil
}

// closeACL empties the target's ACL, so that no new login is admitted.
func (d *Driver) closeACL(ctx context.Context, cur *Status) error {
	for _, a := range slices.Clone(cur.Addresses) {
		if err := d.unbindACL(ctx, cur, a, true); err != nil {
			return err
		}
	}
	for _, n := range slices.Clone(cur.Initiators) {
		if err := d.unbindACL(ctx, cur, n, false); err != nil {
			return err
		}
	}
	return nil
}

// unbindACL removes one ACL entry. Which of tgtd's two lists holds an entry
// is guessed from its form; when tgtd says it is not there, the other list
// is tried.
func (d *Driver) unbindACL(ctx context.Context, cur *Status, entry string, address bool) error {
	flags := []string{"--initiator-name", "--initiator-address"}
	if address {
		flags[0], flags[1] = flags[1], flags[0]
	}
	var err error
	for _, flag := range flags {
		_, err = d.run(ctx, "target unbind", "--lld", "iscsi", "--mode", "target", "--op", "unbind",
			"--tid", strconv.Itoa(cur.TID), flag, entry)
		if err == nil || !errors.Is(err, ErrNotFound) {
			break
		}
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("remove ACL entry %q: %w", entry, err)
	}
	drop := func(s string) bool { return s == entry }
	cur.Addresses = slices.DeleteFunc(cur.Addresses, drop)
	cur.Initiators = slices.DeleteFunc(cur.Initiators, drop)
	return nil
}

func (d *Driver) unbindAccount(ctx context.Context, cur *Status, user string, outgoing bool) error {
	args := []string{"--lld", "iscsi", "--mode", "account", "--op", "unbind", "--tid", strconv.Itoa(cur.TID), "--user", user}
	if outgoing {
		args = append(args, "--outgoing")
	}
	if _, err := d.run(ctx, "account unbind", args...); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("unbind account %q: %w", user, err)
	}
	drop := func(s string) bool { return s == user }
	cur.Accounts = slices.DeleteFunc(cur.Accounts, drop)
	cur.Outgoing = slices.DeleteFunc(cur.Outgoing, drop)
	return nil
}

func (d *Driver) deleteAccount(ctx context.Context, st *state, user string) error {
	if _, err := d.run(ctx, "account delete", "--lld", "iscsi", "--mode", "account", "--op", "delete",
		"--user", user); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete account %q: %w", user, err)
	}
	delete(st.accounts, user)
	delete(d.secrets, user)
	return nil
}

func (d *Driver) deleteLUN(ctx context.Context, tid, lun int) error {
	if _, err := d.run(ctx, "logicalunit delete", "--lld", "iscsi", "--mode", "logicalunit", "--op", "delete",
		"--tid", strconv.Itoa(tid), "--lun", strconv.Itoa(lun)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete LUN %d: %w", lun, err)
	}
	return nil
}

func (d *Driver) setState(ctx context.Context, tid int, value string) error {
	if _, err := d.run(ctx, "target update", "--lld", "iscsi", "--mode", "target", "--op", "update",
		"--tid", strconv.Itoa(tid), "--name", "state", "--value", value); err != nil {
		return fmt.Errorf("set state %s: %w", value, err)
	}
	return nil
}
