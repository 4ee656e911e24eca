package route

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
)

type staticChannels []store.Channel

func (c staticChannels) Channels(context.Context) ([]store.Channel, error) { return c, nil }

func newTestRouter(t *testing.T, chs ...store.Channel) (*Router, *time.Time) {
	t.Helper()
	build := func(string, string, secret.Secret) (providers.Provider, error) { return nil, nil }
	r := NewRouter(staticChannels(chs), build, slog.New(slog.DiscardHandler))
	now := time.Unix(1_800_000_000, 0)
	r.now = func() time.Time { return now }
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, &now
}

func ch(id string, priority, weight int, models ...string) store.Channel {
	return store.Channel{ID: id, Provider: "fake", Models: models, Priority: priority, Weight: weight, Enabled: true,
		ModelMap: map[string]string{}}
}

func TestRouterPrioritiesAndWeights(t *testing.T) {
	t.Parallel()
	r, _ := newTestRouter(t, ch("hi", 10, 1, "m"), ch("a", 0, 3, "m"), ch("b", 0, 1, "m"))
	counts := map[string]int{}
	for range 1000 {
		rt, wait, ok := r.Pick("m", map[string]bool{"hi": true}) // the top tier already tried
		if !ok || wait != 0 {
			t.Fatalf("Pick = ok %v wait %v", ok, wait)
		}
		counts[rt.Channel.ID]++
	}
	// Weights 3:1 → expect ~750/250; allow a wide margin (binomial sd ≈ 14).
	if counts["a"] < 650 || counts["a"] > 850 || counts["a"]+counts["b"] != 1000 {
		t.Errorf("weighted choice = %v, want about 750/250", counts)
	}
	if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "hi" {
		t.Errorf("Pick = %s, want the highest priority tier first", rt.Channel.ID)
	}
	if _, _, ok := r.Pick("other", nil); ok {
		t.Error("Pick of an unserved model succeeded")
	}
}

func TestRouterCooldownAndCircuit(t *testing.T) {
	t.Parallel()
	r, now := newTestRouter(t, ch("a", 10, 1, "m"), ch("b", 0, 1, "m"))
	r.Failed("a", 30*time.Second) // a 429 with Retry-After: 30
	if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "b" {
		t.Fatalf("Pick while a cools = %s, want b", rt.Channel.ID)
	}
	*now = now.Add(29 * time.Second)
	if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "b" {
		t.Errorf("Pick after 29s = %s, want b (a still cooling)", rt.Channel.ID)
	}
	*now = now.Add(2 * time.Second)
	if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "a" {
		t.Errorf("Pick after 31s = %s, want a again", rt.Channel.ID)
	}
	r.Succeeded("a") // the call after the cooldown worked
	// Three failures in a row without Retry-After open the circuit; a success closes it.
	r.Failed("a", 0)
	r.Failed("a", 0)
	if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "a" {
		t.Errorf("after two failures Pick = %s, want a (circuit still closed)", rt.Channel.ID)
	}
	r.Failed("a", 0)
	if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "b" {
		t.Errorf("after three failures Pick = %s, want b (circuit open)", rt.Channel.ID)
	}
	// Only cooling channels left: the soonest ready is returned with the wait.
	rt, wait, ok := r.Pick("m", map[string]bool{"b": true})
	if !ok || rt.Channel.ID != "a" || wait != time.Second {
		t.Errorf("Pick with only a cooling = %s wait %v ok %v, want a after 1s", rt.Channel.ID, wait, ok)
	}
	r.Succeeded("a")
	*now = now.Add(2 * time.Second)
	r.Failed("a", 0)
	if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "a" {
		t.Errorf("after a success and one failure Pick = %s, want a (circuit reset)", rt.Channel.ID)
	}
}

func TestRouterRemoveSurvivesStaleRefresh(t *testing.T) {
	t.Parallel()
	r, now := newTestRouter(t, ch("a", 0, 1, "m"), ch("b", 0, 1, "m"))
	r.Remove("a")
	// A reload that began before the removal (its data says a is enabled) must not bring a back.
	r.now = func() time.Time { return now.Add(-time.Second) }
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return *now }
	for range 50 {
		if rt, _, _ := r.Pick("m", nil); rt.Channel.ID != "b" {
			t.Fatalf("Pick = %s after a was removed", rt.Channel.ID)
		}
	}
	if !r.Has("m") || r.Has("x") {
		t.Error("Has is wrong")
	}
}

func TestRouterModelMap(t *testing.T) {
	t.Parallel()
	c := ch("a", 0, 1, "gpt-4o")
	c.ModelMap = map[string]string{"fast": "gpt-4o-mini", "gpt-4o": "gpt-4o-2024-11-20"}
	r, _ := newTestRouter(t, c)
	for model, want := range map[string]string{"fast": "gpt-4o-mini", "gpt-4o": "gpt-4o-2024-11-20"} {
		if rt, _, ok := r.Pick(model, nil); !ok || rt.UpstreamModel != want {
			t.Errorf("Pick(%s).UpstreamModel = %q, want %q", model, rt.UpstreamModel, want)
		}
	}
	if got := r.Models(); len(got) != 2 || got[0] != "fast" || got[1] != "gpt-4o" {
		t.Errorf("Models = %v", got)
	}
}

// TestMaxConcurrencyPerChannel_Issue9_0: a channel at its max_concurrency is busy — Pick
// prefers another channel, or reports a short wait — and Acquire refuses it until a call ends.
func TestMaxConcurrencyPerChannel_Issue9_0(t *testing.T) {
	t.Parallel()
	two := 2
	capped := store.Channel{ID: "ch_capped", Provider: "openai", Models: []string{"m"}, Enabled: true, Weight: 1,
		Priority: 1, MaxConcurrency: &two}
	spare := store.Channel{ID: "ch_spare", Provider: "openai", Models: []string{"m"}, Enabled: true, Weight: 1}
	r, _ := newTestRouter(t, capped, spare)
	pick := func() (string, time.Duration) {
		t.Helper()
		rt, wait, ok := r.Pick("m", nil)
		if !ok {
			t.Fatal("Pick found no channel")
		}
		return rt.Channel.ID, wait
	}
	if id, _ := pick(); id != "ch_capped" {
		t.Fatalf("Pick = %s, want the higher-priority capped channel while it has room", id)
	}
	rt, _, _ := r.Pick("m", nil)
	rel1, ok1 := r.Acquire(rt)
	rel2, ok2 := r.Acquire(rt)
	if !ok1 || !ok2 {
		t.Fatal("Acquire refused a channel below its cap")
	}
	if _, ok := r.Acquire(rt); ok {
		t.Fatal("Acquire took a third place on a channel capped at 2")
	}
	if id, wait := pick(); id != "ch_spare" || wait != 0 {
		t.Errorf("Pick with the capped channel full = %s (wait %s), want the spare channel at once", id, wait)
	}
	if id, wait := func() (string, time.Duration) {
		rt, wait, _ := r.Pick("m", map[string]bool{"ch_spare": true})
		return rt.Channel.ID, wait
	}(); id != "ch_capped" || wait != BusyRecheck {
		t.Errorf("Pick with only the full channel left = %s (wait %s), want it after %s", id, wait, BusyRecheck)
	}
	rel1()
	rel1() // a second release gives nothing back twice
	if n := r.InFlight("ch_capped"); n != 1 {
		t.Errorf("in flight after one release (twice) = %d, want 1", n)
	}
	if _, ok := r.Acquire(rt); !ok {
		t.Error("Acquire refused a place freed by a release")
	}
	rel2()
}
