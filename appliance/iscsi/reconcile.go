package iscsi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Remove deletes the target named iqn, disconnecting its sessions, and the
// CHAP accounts that were bound to it and to no other target. Removing a
// target tgtd does not have is not an error.
func (d *Driver) Remove(ctx context.Context, iqn string) error {
	if err := ValidateIQN(iqn); err != nil {
		return fmt.Errorf("remove target: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.snapshot(ctx)
	if err != nil {
		return fmt.Errorf("remove target %s: %w", iqn, err)
	}
	cur := st.byIQN(iqn)
	if cur == nil {
		return nil
	}
	return d.remove(ctx, st, cur)
}

// remove deletes one target, then its accounts. It does not delete an
// account before the target: tgtd would silently unbind it and, while the
// target exists, admit initiators of its ACL without CHAP. A target with
// commands in flight refuses even a forced delete ("still active"); set
// offline first, it drains, which is what tgt-admin does too.
func (d *Driver) remove(ctx context.Context, st *state, cur *Status) error {
	tid := strconv.Itoa(cur.TID)
	if err := d.setState(ctx, cur.TID, "offline"); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("remove target %s (tid %d): %w", cur.IQN, cur.TID, err)
	}
	for attempt := 0; ; attempt++ {
		_, err := d.run(ctx, "target delete", "--lld", "iscsi", "--mode", "target", "--op", "delete",
			"--force", "--tid", tid)
		if err == nil || errors.Is(err, ErrNotFound) {
			break
		}
		if !errors.Is(err, ErrBusy) || attempt == busyRetries {
			return fmt.Errorf("remove target %s (tid %d): %w", cur.IQN, cur.TID, err)
		}
		if err := sleep(ctx, busyWait); err != nil {
			return fmt.Errorf("remove target %s (tid %d): %w", cur.IQN, cur.TID, err)
		}
	}
	st.targets = slices.DeleteFunc(st.targets, func(t *Status) bool { return t == cur })
	d.log.Info("iscsi target removed", "iqn", cur.IQN, "tid", cur.TID, "sessions", len(cur.Sessions))
	for _, a := range slices.Concat(cur.Accounts, cur.Outgoing) {
		if st.accountOwner(a, "") != nil {
			continue
		}
		if err := d.deleteAccount(ctx, st, a); err != nil {
			return fmt.Errorf("remove target %s: %w", cur.IQN, err)
		}
	}
	return nil
}

// Reconcile makes tgtd hold exactly want: it removes every target whose
// IQN is not wanted, applies each wanted target, then deletes the CHAP
// accounts that no wanted target uses. It is how the caller rebuilds tgtd's
// state after tgtd restarted, and it carries on past a target that fails,
// returning all the errors joined. A wanted target that is invalid (such as
// a missing backing file) is left as tgtd has it, never removed.
func (d *Driver) Reconcile(ctx context.Context, want []Target) error {
	var errs []error
	wanted := make(map[string]bool, len(want))
	users := make(map[string]string, len(want))
	var valid []Target
	for _, t := range want {
		if err := t.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("reconcile target %s: %w", t.IQN, err))
			wanted[t.IQN] = true
			continue
		}
		if wanted[t.IQN] {
			errs = append(errs, fmt.Errorf("reconcile target %s: %w: wanted twice", t.IQN, ErrInvalid))
			continue
		}
		wanted[t.IQN] = true
		if other, ok := users[t.CHAPUser]; ok {
			errs = append(errs, fmt.Errorf("reconcile target %s: %w: account %q is also wanted for %s",
				t.IQN, ErrConflict, t.CHAPUser, other))
			continue
		}
		users[t.CHAPUser] = t.IQN
		valid = append(valid, t)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.snapshot(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("reconcile: %w", err))...)
	}
	for _, cur := range slices.Clone(st.targets) {
		if !wanted[cur.IQN] {
			if err := d.remove(ctx, st, cur); err != nil {
				errs = append(errs, fmt.Errorf("reconcile: %w", err))
			}
		}
	}
	for _, t := range valid {
		if err := d.apply(ctx, st, t); err != nil {
			errs = append(errs, fmt.Errorf("reconcile: %w", err))
		}
	}
	for a := range st.accounts {
		if _, ok := users[a]; !ok && st.accountOwner(a, "") == nil {
			if err := d.deleteAccount(ctx, st, a); err != nil {
				errs = append(errs, fmt.Errorf("reconcile: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
