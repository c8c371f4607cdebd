package m2

import (
	"context"
	"errors"
	"fmt"
)

// Projects is what RemoveProject needs: the backend itself
// (server.Backend) or a Client of one.
type Projects interface {
	Disks(ctx context.Context, project string) ([]Disk, error)
	Detach(ctx context.Context, project, disk string) error
	DeleteDisk(ctx context.Context, project, name string) error
	Snapshots(ctx context.Context, project string) ([]Snapshot, error)
	RemoveSnapshot(ctx context.Context, project, name string) error
}

// RemoveProject deletes every disk (detached first) and snapshot of a
// project: an offboarded tenant's storage. It returns how many it deleted;
// past an error it goes on with the others and reports them all.
func RemoveProject(ctx context.Context, p Projects, project string) (int, error) {
	disks, err := p.Disks(ctx, project)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, d := range disks {
		if d.Node != "" {
			if err := p.Detach(ctx, project, d.Name); err != nil {
				errs = append(errs, fmt.Errorf("detach %s/%s: %w", project, d.Name, err))
				continue
			}
		}
		if err := p.DeleteDisk(ctx, project, d.Name); err != nil {
			errs = append(errs, fmt.Errorf("delete %s/%s: %w", project, d.Name, err))
			continue
		}
		n++
	}
	snaps, err := p.Snapshots(ctx, project)
	if err != nil {
		return n, errors.Join(append(errs, err)...)
	}
	for _, s := range snaps {
		if err := p.RemoveSnapshot(ctx, project, s.Name); err != nil {
			errs = append(errs, fmt.Errorf("delete snapshot %s/%s: %w", project, s.Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
