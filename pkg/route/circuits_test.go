package route

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
)

// TestCircuits_Issue14_1: a channel's breaker reads closed while it fails once or twice,
// open for its pause after the third failure in a row, half-open once the pause is over,
// cooling when only held back, and drops out of the list when it succeeds.
func TestCircuits_Issue14_1(t *testing.T) {
	t.Parallel()
	r, now := newTestRouter(t, ch("a", 0, 1, "m"), ch("b", 0, 1, "m"), ch("c", 0, 1, "m"))
	unix := func(d time.Duration) *int64 { u := now.Add(d).Unix(); return &u }
	if got := r.Circuits(); len(got) != 0 {
		t.Fatalf("fresh router: Circuits() = %+v, want none", got)
	}
	r.Failed("a", 0)
	r.Failed("a", 0)
	r.Defer("b", 10*time.Second)
	want := []Circuit{{ChannelID: "a", State: CircuitClosed, Failures: 2},
		{ChannelID: "b", State: CircuitCooling, Until: unix(10 * time.Second)}}
	if diff := cmp.Diff(want, r.Circuits()); diff != "" {
		t.Fatalf("two failures and a deferral (-want +got):\n%s", diff)
	}
	r.Failed("a", 0) // the third: open for 1s
	want[0] = Circuit{ChannelID: "a", State: CircuitOpen, Failures: 3, Until: unix(time.Second)}
	if diff := cmp.Diff(want, r.Circuits()); diff != "" {
		t.Fatalf("third failure (-want +got):\n%s", diff)
	}
	*now = now.Add(2 * time.Second)
	want[0] = Circuit{ChannelID: "a", State: CircuitHalfOpen, Failures: 3}
	want[1].Until = unix(8 * time.Second)
	if diff := cmp.Diff(want, r.Circuits()); diff != "" {
		t.Fatalf("after the pause (-want +got):\n%s", diff)
	}
	r.Succeeded("a")
	*now = now.Add(10 * time.Second)
	if got := r.Circuits(); len(got) != 0 {
		t.Fatalf("after a success and the cooling: Circuits() = %+v, want none", got)
	}
}

// TestGatherCircuits_Issue14_2: GatherCircuits collects one report from each process
// serving circuits over a real NATS server, and none (without error) when none does.
func TestGatherCircuits_Issue14_2(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	ctx := context.Background()
	got, err := GatherCircuits(ctx, nc, 200*time.Millisecond, 50*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("no workers: GatherCircuits = %+v, %v; want none, nil", got, err)
	}
	r1, _ := newTestRouter(t, ch("a", 0, 1, "m"))
	r2, _ := newTestRouter(t, ch("a", 0, 1, "m"))
	for range 3 {
		r2.Failed("a", 0)
	}
	for name, r := range map[string]*Router{"w1": r1, "w2": r2} {
		stop, err := r.ServeCircuits(nc, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Generous: the quiet gap after the first answer must cover the second on a busy box.
	got, err = GatherCircuits(ctx, nc, 10*time.Second, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Process != "w1" || got[1].Process != "w2" {
		t.Fatalf("GatherCircuits = %+v, want reports of w1 and w2", got)
	}
	if len(got[0].Circuits) != 0 || len(got[1].Circuits) != 1 || got[1].Circuits[0].State != CircuitOpen {
		t.Errorf("reports = %+v, want w1 with none and w2 with channel a open", got)
	}
	// Disconnected, the workers cannot be asked: an error, not "every circuit closed".
	nc.Close()
	if got, err := GatherCircuits(ctx, nc, time.Second, 100*time.Millisecond); err == nil {
		t.Errorf("on a closed connection: GatherCircuits = %+v, nil; want an error", got)
	}
}
