package route

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
)

// ChannelSource lists the configured upstream channels.
type ChannelSource interface {
	Channels(ctx context.Context) ([]store.Channel, error)
}

// BuildFunc makes the adapter for a channel.
type BuildFunc func(kind, baseURL string, apiKey secret.Secret) (providers.Provider, error)

// Target is one way to serve a model: a channel, its adapter and the model name upstream.
type Target struct {
	Channel       store.Channel
	Provider      providers.Provider
	UpstreamModel string
}

// Router keeps a model → channels index fresh and picks a channel per attempt: the highest
// priority tier with a usable channel, weighted random inside the tier, skipping channels
// already tried for this job and channels cooling down after a failure.
type Router struct {
	src     ChannelSource
	build   BuildFunc // nil: index models only (the ingress)
	log     *slog.Logger
	mu      sync.RWMutex
	byModel map[string][]Target
	cool    map[string]time.Time // channel id → not before
	fails   map[string]int       // channel id → consecutive retryable failures
	now     func() time.Time
	nudge   chan struct{}
	loaded  time.Time            // when the last successful refresh began
	removed map[string]time.Time // channel id → when Remove took it out
	refresh sync.Mutex

	busyMu   sync.Mutex
	inflight map[string]int // channel id → calls in flight in this process, for capped channels
}

// BusyRecheck is the wait Pick reports for a channel at its max_concurrency: the caller
// looks again after it (a call on the channel may have ended by then).
const BusyRecheck = 50 * time.Millisecond

// NewRouter returns a Router; call Refresh once, then Run to keep it fresh.
func NewRouter(src ChannelSource, build BuildFunc, log *slog.Logger) *Router {
	return &Router{src: src, build: build, log: log, byModel: map[string][]Target{}, cool: map[string]time.Time{}, fails: map[string]int{}, removed: map[string]time.Time{}, now: time.Now,
		nudge: make(chan struct{}, 1), inflight: map[string]int{}}
}

// Refresh reloads the channels.
func (r *Router) Refresh(ctx context.Context) error {
	began := r.now()
	chs, err := r.src.Channels(ctx)
	if err != nil {
		return err
	}
	r.mu.RLock()
	removed := maps.Clone(r.removed)
	r.mu.RUnlock()
	idx := map[string][]Target{}
	for _, ch := range chs {
		// A channel removed here after this read began may still read enabled in it.
		if !ch.Enabled || removed[ch.ID].After(began) {
			continue
		}
		if ch.KeyUnreadable { // logged by id only; the store left its key empty
			r.log.Error("skipping channel: its upstream key cannot be decrypted with the configured encryption keys",
				"channel_id", ch.ID, "provider", ch.Provider)
			continue
		}
		var p providers.Provider
		if r.build != nil {
			if p, err = r.build(ch.Provider, ch.BaseURL, ch.APIKey); err != nil {
				r.log.Warn("skipping channel", "channel_id", ch.ID, "provider", ch.Provider, "err", err)
				continue
			}
		}
		for _, m := range ch.Models {
			up := m
			if mapped, ok := ch.ModelMap[m]; ok {
				up = mapped
			}
			idx[m] = append(idx[m], Target{Channel: ch, Provider: p, UpstreamModel: up})
		}
		for alias, up := range ch.ModelMap {
			if !slices.Contains(ch.Models, alias) {
				idx[alias] = append(idx[alias], Target{Channel: ch, Provider: p, UpstreamModel: up})
			}
		}
	}
	r.mu.Lock()
	r.byModel = idx
	r.loaded = began
	for id, at := range r.removed {
		if began.Sub(at) > time.Minute {
			delete(r.removed, id)
		}
	}
	r.mu.Unlock()
	return nil
}

// RefreshIfOlder reloads the channels unless a reload began after t. Callers are
// serialised, so a burst of jobs for a model this process cannot serve costs one reload per
// reload time at most, never one per job in parallel.
func (r *Router) RefreshIfOlder(ctx context.Context, t time.Time) error {
	r.refresh.Lock()
	defer r.refresh.Unlock()
	r.mu.RLock()
	fresh := r.loaded.After(t)
	r.mu.RUnlock()
	if fresh {
		return nil
	}
	return r.Refresh(ctx)
}

// Run refreshes every interval, and at once when nudged (WatchChanges), until ctx is done. Failures are logged and retried.
func (r *Router) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.nudge:
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := r.Refresh(rctx); err != nil && ctx.Err() == nil {
			r.log.Warn("refresh channels", "err", err)
		}
		cancel()
	}
}

// Models returns every model some enabled channel serves, sorted.
func (r *Router) Models() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byModel))
	for m := range r.byModel {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// Has reports whether some enabled channel serves model.
func (r *Router) Has(model string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byModel[model]) > 0
}

// Pick chooses a route for model, skipping channels in tried. When every untried channel is
// cooling down or at its max_concurrency in this process (busy, rechecked after
// BusyRecheck), it returns the one that is ready soonest and how long until then. ok is false
// when no untried channel serves the model. Pick reserves nothing: call Acquire before the
// upstream call.
func (r *Router) Pick(model string, tried map[string]bool) (t Target, wait time.Duration, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.now()
	var ready []Target
	var best Target
	var bestAt time.Time
	for _, rt := range r.byModel[model] {
		if tried[rt.Channel.ID] {
			continue
		}
		at := r.cool[rt.Channel.ID]
		if r.full(rt.Channel) {
			at = later(at, now.Add(BusyRecheck))
		}
		if at.After(now) {
			if bestAt.IsZero() || at.Before(bestAt) {
				best, bestAt = rt, at
			}
			continue
		}
		ready = append(ready, rt)
	}
	if len(ready) == 0 {
		if bestAt.IsZero() {
			return Target{}, 0, false
		}
		return best, bestAt.Sub(now), true
	}
	top := ready[0].Channel.Priority
	for _, rt := range ready {
		top = max(top, rt.Channel.Priority)
	}
	var tier []Target
	total := 0
	for _, rt := range ready {
		if rt.Channel.Priority == top {
			tier = append(tier, rt)
			total += max(rt.Channel.Weight, 1)
		}
	}
	n := rand.IntN(total)
	for _, rt := range tier {
		if n -= max(rt.Channel.Weight, 1); n < 0 {
			return rt, 0, true
		}
	}
	return tier[len(tier)-1], 0, true
}

// full reports whether a capped channel has max_concurrency calls in flight here.
func (r *Router) full(ch store.Channel) bool {
	if ch.MaxConcurrency == nil {
		return false
	}
	r.busyMu.Lock()
	defer r.busyMu.Unlock()
	return r.inflight[ch.ID] >= *ch.MaxConcurrency
}

// Acquire takes one of t's channel's max_concurrency places for an upstream call; release
// gives it back (call it once the call has returned). ok is false if the channel is full,
// and then there is nothing to release. An uncapped channel always has room.
func (r *Router) Acquire(t Target) (release func(), ok bool) {
	ch := t.Channel
	if ch.MaxConcurrency == nil {
		return func() {}, true
	}
	r.busyMu.Lock()
	defer r.busyMu.Unlock()
	if r.inflight[ch.ID] >= *ch.MaxConcurrency {
		return nil, false
	}
	r.inflight[ch.ID]++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.busyMu.Lock()
			defer r.busyMu.Unlock()
			if r.inflight[ch.ID]--; r.inflight[ch.ID] <= 0 {
				delete(r.inflight, ch.ID)
			}
		})
	}, true
}

// InFlight is how many calls are in flight here on a capped channel.
func (r *Router) InFlight(channelID string) int {
	r.busyMu.Lock()
	defer r.busyMu.Unlock()
	return r.inflight[channelID]
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Failed records a retryable failure of a channel: it cools for retryAfter if the upstream
// said so, and after three failures in a row its circuit opens for a pause that doubles with
// each further failure (1s, 2s, 4s … capped at 60s), so one failing channel is not hammered.
func (r *Router) Failed(channelID string, retryAfter time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.fails[channelID]++
	pause := retryAfter
	if n := r.fails[channelID]; n >= openAfter {
		pause = max(pause, min(time.Second<<(n-openAfter), 60*time.Second))
	}
	if until := now.Add(pause); pause > 0 && until.After(r.cool[channelID]) {
		r.cool[channelID] = until
	}
	for id, t := range r.cool { // keep the map as small as the set of cooling channels
		if t.Before(now) {
			delete(r.cool, id)
		}
	}
}

// Defer holds a channel back in this process for d without counting a failure: its quota
// (rpm, tpm, max_concurrency across workers) is used up for now. Pick passes it over for
// another channel, or reports the wait when it is the only one.
func (r *Router) Defer(channelID string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until := r.now().Add(d); until.After(r.cool[channelID]) {
		r.cool[channelID] = until
	}
}

// Succeeded closes a channel's circuit.
func (r *Router) Succeeded(channelID string) {
	r.mu.RLock()
	n := r.fails[channelID]
	r.mu.RUnlock()
	if n == 0 {
		return // the common case takes no write lock
	}
	r.mu.Lock()
	delete(r.fails, channelID)
	r.mu.Unlock()
}

// Remove takes a channel out of this process's index at once (until the next refresh, which
// will not bring back a channel disabled in Postgres).
func (r *Router) Remove(channelID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed[channelID] = r.now()
	for m, routes := range r.byModel {
		r.byModel[m] = slices.DeleteFunc(slices.Clone(routes), func(rt Target) bool { return rt.Channel.ID == channelID })
	}
}

// channelsSubject carries "channels changed" announcements between processes.
const channelsSubject = "sluice.config.channels"

// AnnounceChannelsChanged tells every Router subscribed through WatchChanges to reload now.
func AnnounceChannelsChanged(nc *nats.Conn) {
	_ = nc.Publish(channelsSubject, nil)
}

// WatchChanges subscribes to change announcements; each one nudges the Run loop to refresh
// at once. Call the returned function to unsubscribe.
func (r *Router) WatchChanges(nc *nats.Conn) (stop func(), err error) {
	sub, err := nc.Subscribe(channelsSubject, func(*nats.Msg) {
		select {
		case r.nudge <- struct{}{}:
		default: // a refresh is already pending
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to channel changes: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
