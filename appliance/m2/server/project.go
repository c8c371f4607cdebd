package server

import (
	"context"
	"errors"
	"fmt"
)

// RemoveTenantDisks deletes every disk (detached first) and snapshot of a
// project: an offboarded tenant's storage. It returns how many it deleted;
// on an error it goes on with the others and reports them all.
func (b *Backend) RemoveTenantDisks(ctx context.Context, project string) (int, error) {
	disks, err := b.Disks(ctx, project)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, d := range disks {
		if d.Node != "" {
			if err := b.Detach(ctx, project, d.Name); err != nil {
				errs = append(errs, fmt.Errorf("detach %s/%s: %w", project, d.Name, err))
				continue
			}
		}
		if err := b.DeleteDisk(ctx, project, d.Name); err != nil {
			errs = append(errs, fmt.Errorf("delete %s/%s: %w", project, d.Name, err))
			continue
		}
		n++
	}
	snaps, err := b.Snapshots(ctx, project)
	if err != nil {
		return n, errors.Join(append(errs, err)...)
	}
	for _, s := range snaps {
		if err := b.RemoveSnapshot(ctx, project, s.Name); err != nil {
			errs = append(errs, fmt.Errorf("delete snapshot %s/%s: %w", project, s.Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
