package worker

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// keyLookup reads a key by id; store.ErrNotFound when there is none.
type keyLookup func(ctx context.Context, id string) (store.Key, error)

// keyCheck is the pool's second look at a job's API key, at pick-up: the ingress checked the
// key when it accepted the job, but a job may wait in the queue while its key is revoked,
// expires or spends its budget (queued jobs of a key just under budget would otherwise all
// run). Lookups are cached for ttl, so a hot key costs one query per ttl per worker.
type keyCheck struct {
	ttl    time.Duration
	lookup keyLookup

	mu sync.Mutex
	m  map[string]cachedKey
}

type cachedKey struct {
	key     store.Key
	missing bool // no such key
	at      time.Time
}

// keyCacheMax bounds the cache; past it, it is emptied (keys are re-read as they come).
const keyCacheMax = 100_000

func newKeyCheck(ttl time.Duration, lookup keyLookup) *keyCheck {
	return &keyCheck{ttl: ttl, lookup: lookup, m: map[string]cachedKey{}}
}

// refuse returns the error a job of keyID must end with, uncharged, or nil if it may run.
// If Postgres cannot be asked and nothing is cached, the job runs: it was admitted, and a
// Postgres outage must not fail the queue.
func (c *keyCheck) refuse(ctx context.Context, keyID string, now time.Time) *jobs.APIError {
	ck, ok := c.get(keyID, now)
	if !ok {
		k, err := c.lookup(ctx, keyID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			ck = cachedKey{missing: true, at: now}
		case err != nil:
			return nil
		default:
			ck = cachedKey{key: k, at: now}
		}
		c.put(keyID, ck)
	}
	switch {
	case ck.missing:
		return jobs.NewError(http.StatusUnauthorized, "authentication_error", "invalid_api_key",
			"The job's API key does not exist.")
	case !ck.key.Usable(now):
		return jobs.NewError(http.StatusUnauthorized, "authentication_error", "invalid_api_key",
			"The job's API key was revoked or expired after the job was accepted; it did not run.")
	case ck.key.OverBudget(now):
		return jobs.NewError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
			"The API key's budget was spent while the job was queued; it did not run.")
	case ck.key.Team != nil && teamOver(ck.key.Team, now):
		return jobs.NewError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
			"The API key's team's budget was spent while the job was queued; it did not run.")
	}
	return nil
}

// charged adds cost to a cached key's spend, so this worker sees its own charges at once
// rather than a ttl later; other workers' charges arrive with the next lookup.
func (c *keyCheck) charged(id string, cost float64) {
	if cost <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ck, ok := c.m[id]; ok && !ck.missing {
		ck.key.Charge(cost, time.Now())
		c.m[id] = ck
	}
}

func (c *keyCheck) get(id string, now time.Time) (cachedKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ck, ok := c.m[id]
	if !ok || now.Sub(ck.at) >= c.ttl {
		return cachedKey{}, false
	}
	return ck, true
}

func (c *keyCheck) put(id string, ck cachedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= keyCacheMax {
		clear(c.m)
	}
	c.m[id] = ck
}

func teamOver(t *store.Team, now time.Time) bool {
	sp := t.Spend()
	return sp.Over(now)
}
