package power

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// slowStatus is an allocator whose status reads take a second and are
// counted; nothing else is called.
type slowStatus struct {
	Allocator
	reads atomic.Int32
}

func (s *slowStatus) PowerStatus(ctx context.Context, node string) (bool, error) {
	s.reads.Add(1)
	time.Sleep(time.Second)
	return true, nil
}

// TestConcurrentStatusReadsCoalesce: tenants' status reads of one node
// that miss the cache at once share one BMC read (a BMC serves few
// sessions), and a read after the answer is served from cache.
func TestConcurrentStatusReadsCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alloc := &slowStatus{}
		p := New(alloc, time.Minute, time.Now)
		p.cache.budget, p.cache.limit = 5*time.Second, 5*time.Second
		var wg sync.WaitGroup
		var on atomic.Int32
		for range 16 {
			wg.Go(func() {
				r, err := p.cache.status(context.Background(), "node-1")
				if err != nil {
					t.Errorf("status: %v", err)
				}
				if r.On {
					on.Add(1)
				}
			})
		}
		wg.Wait()
		if n := alloc.reads.Load(); n != 1 {
			t.Errorf("16 concurrent reads made %d BMC reads, want 1", n)
		}
		if on.Load() != 16 {
			t.Errorf("%d of 16 readers saw the node on", on.Load())
		}
		if _, err := p.cache.status(context.Background(), "node-1"); err != nil || alloc.reads.Load() != 1 {
			t.Errorf("a read within the TTL went to the BMC (%d reads, %v)", alloc.reads.Load(), err)
		}
		// A power change drops the state: the next read is fresh.
		p.cache.forget("node-1")
		if _, err := p.cache.status(context.Background(), "node-1"); err != nil || alloc.reads.Load() != 2 {
			t.Errorf("a read after a change was not fresh (%d reads, %v)", alloc.reads.Load(), err)
		}
	})
}

var _ Allocator = (*slowStatus)(nil)
