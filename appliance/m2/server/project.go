package server

import (
	"context"

	"github.com/malleable-cloud/malleable/appliance/m2"
)

// RemoveTenantDisks deletes every disk and snapshot of a project
// (m2.RemoveProject): an offboarded tenant's storage.
func (b *Backend) RemoveTenantDisks(ctx context.Context, project string) (int, error) {
	return m2.RemoveProject(ctx, b, project)
}
