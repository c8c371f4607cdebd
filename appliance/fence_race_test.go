package appliance

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// TestFenceWaitsOutBrokerPowerCommands is the broker's central invariant
// under concurrency, seen from the BMC: while the old holder hammers
// power-on through the broker's HTTP API from several goroutines, a
// handover fences it; no power-on may reach the BMC after the fence (the
// fence waits out commands already checked), and the handover leaves the
// machine off.
func TestFenceWaitsOutBrokerPowerCommands(t *testing.T) {
	const handovers, loops = 4, 8
	sim := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0.Add(-time.Minute))
	r.clock.Tick()
	ctx := context.Background()
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1",
		"bmc": map[string]any{"host": sim.Host, "port": sim.Port, "user": sim.User, "password": sim.Password}}, 201)
	tenants := []string{"acme", "globex"}
	tokens := map[string]string{}
	for _, ten := range tenants {
		r.admin("POST", "/api/v1/tenants", map[string]any{"name": ten}, 201)
		tokens[ten] = r.admin("POST", "/api/v1/tenants/"+ten+"/token", nil, 201)["token"].(string)
	}
	for k := 0; k <= handovers; k++ {
		r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": tenants[k%2],
			"start": t0.Add(time.Duration(k) * time.Hour).Format(time.RFC3339),
			"end":   t0.Add(time.Duration(k+1) * time.Hour).Format(time.RFC3339)}, 201)
	}
	r.clock.Set(t0)
	if res := r.reconcile(); res.Completed != 1 {
		t.Fatalf("first handover: %+v", res)
	}

	deadline := time.Now().Add(45 * time.Second)
	for k := 1; k <= handovers; k++ {
		old := tenants[(k-1)%2]
		var ok, refused, other atomic.Int64
		var firstOK sync.WaitGroup
		firstOK.Add(1)
		var once sync.Once
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range loops {
			wg.Go(func() {
				for n := 0; n < 400 && time.Now().Before(deadline); n++ {
					select {
					case <-stop:
						return
					default:
					}
					code, _ := r.call(tokens[old], "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"})
					switch code {
					case http.StatusOK:
						ok.Add(1)
						once.Do(firstOK.Done)
					case http.StatusForbidden:
						refused.Add(1)
					default:
						other.Add(1)
					}
				}
				once.Do(firstOK.Done)
			})
		}
		// Let the old holder's commands flow, then cross the lease
		// boundary and hand the node over while they keep coming.
		firstOK.Wait()
		time.Sleep(100 * time.Millisecond)
		r.clock.Set(t0.Add(time.Duration(k) * time.Hour))
		res, err := r.rec.Pass(ctx)
		close(stop)
		wg.Wait()
		if err != nil || res.Completed != 1 {
			t.Fatalf("handover %d: %+v %v", k, res, err)
		}
		hs, err := r.store.ListHandovers(ctx, store.HandoverFilter{Node: "node-1", Limit: 1})
		if err != nil || len(hs) != 1 || hs[0].From != old {
			t.Fatalf("handover %d: %+v %v", k, hs, err)
		}
		j, err := r.store.HandoverJournal(ctx, hs[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		var fence time.Time
		for _, e := range j {
			if e.Step == "fence" && e.Phase == "done" {
				fence = r.clock.Wall(e.At)
			}
		}
		if fence.IsZero() {
			t.Fatalf("handover %d: no fence in the journal %+v", k, j)
		}
		// The journal keeps milliseconds: allow for the truncation.
		var late []string
		for _, c := range sim.Commands() {
			if c.Op == "set" && c.Param == "power" && c.Value == "1" && c.At.After(fence.Add(time.Millisecond)) {
				late = append(late, fmt.Sprintf("+%s", c.At.Sub(fence).Round(time.Microsecond)))
			}
		}
		t.Logf("handover %d from %s: %d power-ons accepted, %d refused, %d other answers; fence at %s",
			k, old, ok.Load(), refused.Load(), other.Load(), fence.Format("15:04:05.000"))
		if len(late) > 0 {
			t.Errorf("handover %d: %d power-on(s) from the fenced holder %s reached the BMC after the fence: %s",
				k, len(late), old, strings.Join(late, " "))
		}
		if other.Load() > 0 {
			t.Errorf("handover %d: %d power-on(s) answered neither 200 nor 403", k, other.Load())
		}
		if sim.PoweredOn() {
			t.Errorf("handover %d left the machine on: a fenced holder's power-on landed after the power-off", k)
			// Start the next round from a known state.
			sim.IPMITool(t, "chassis", "power", "off")
			waitPower(t, sim, false)
		}
	}
}
