package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// spyIPMI passes every call to a real IPMI client and records how many
// run at once per BMC address.
type spyIPMI struct {
	IPMI
	mu             sync.Mutex
	now, max       map[string]int
	nowAll, maxAll int
}

func (s *spyIPMI) enter(t bmc.Target) func() {
	s.mu.Lock()
	s.now[t.Addr()]++
	s.max[t.Addr()] = max(s.max[t.Addr()], s.now[t.Addr()])
	s.nowAll++
	s.maxAll = max(s.maxAll, s.nowAll)
	s.mu.Unlock()
	return func() { s.mu.Lock(); s.now[t.Addr()]--; s.nowAll--; s.mu.Unlock() }
}

func (s *spyIPMI) PowerStatus(ctx context.Context, t bmc.Target) (bool, error) {
	defer s.enter(t)()
	return s.IPMI.PowerStatus(ctx, t)
}

func (s *spyIPMI) Power(ctx context.Context, t bmc.Target, action string) error {
	defer s.enter(t)()
	return s.IPMI.Power(ctx, t, action)
}

// TestIPMIOneSessionPerBMC: many concurrent reads and commands for nodes
// on two real BMCs all succeed, and IPMI to each BMC address runs one
// operation at a time while the two BMCs are driven in parallel.
func TestIPMIOneSessionPerBMC(t *testing.T) {
	sims := []*bmctest.Sim{bmctest.Start(t, bmctest.Options{}), bmctest.Start(t, bmctest.Options{})}
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir()+"/m.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sec := secrets.NewMemory()
	spy := &spyIPMI{IPMI: bmc.New(bmc.Options{}), now: map[string]int{}, max: map[string]int{}}
	p := New(st, sec, spy).BMC
	// Two nodes per BMC: a node-level lock would not serialise them.
	for i := range 4 {
		s := sims[i%2]
		name := fmt.Sprintf("node-%d", i)
		n := inventory.Node{Name: name, BMC: inventory.BMC{Host: s.Host, Port: s.Port, User: s.User}}
		if _, err := st.CreateNode(ctx, n, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := sec.Put(ctx, secrets.BMCPasswordPath(name), []byte(s.Password)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for g := range 16 {
		wg.Go(func() {
			for i := range 10 {
				name := fmt.Sprintf("node-%d", (g+i)%4)
				var err error
				if i == 5 {
					err = p.Power(ctx, name, node.PowerOn)
				} else {
					_, err = p.PowerStatus(ctx, name)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d of 160 IPMI calls failed, first: %v", len(errs), errors.Join(errs[0]))
	}
	for addr, n := range spy.max {
		if n != 1 {
			t.Errorf("%d IPMI operations ran at once on BMC %s", n, addr)
		}
	}
	if spy.maxAll < 2 {
		t.Errorf("the two BMCs were never driven in parallel (max %d at once)", spy.maxAll)
	}
}
