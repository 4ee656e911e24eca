package ingress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// CacheBucket is the JetStream key-value bucket that holds cached answers.
const CacheBucket = "SLUICE_CACHE"

// respCache is the response cache: whole answers (or a stream's events) of sync requests,
// keyed by the API key and the normalized request, in a JetStream KV bucket that every
// ingress reads and writes. The bucket's MaxBytes bounds its size (a full bucket takes no
// new entries until old ones expire) and its TTL the longest any entry lives; each entry
// also carries its own expiry (the request's max-age or the key's cache_ttl_s).
type respCache struct {
	kv       jetstream.KeyValue
	maxTTL   time.Duration
	maxEntry int
}

// ensureCache creates or updates the cache bucket.
func ensureCache(ctx context.Context, js jetstream.JetStream, cfg *Config) (*respCache, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: CacheBucket,
		Description: "Sluice response cache", TTL: cfg.CacheMaxTTL, MaxBytes: cfg.CacheMaxBytes,
		MaxValueSize: int32(cfg.CacheMaxEntryBytes), History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	return &respCache{kv: kv, maxTTL: cfg.CacheMaxTTL, maxEntry: cfg.CacheMaxEntryBytes}, nil
}

// cacheEntry is one cached answer.
type cacheEntry struct {
	Expires int64        `json:"exp"` // Unix milliseconds
	Status  int          `json:"status"`
	Body    []byte       `json:"body,omitempty"`   // a whole answer
	Events  []cacheEvent `json:"events,omitempty"` // a stream's events, in order
	Usage   *tokens.Usage
	size    int
}

type cacheEvent struct {
	Name string `json:"e,omitempty"`
	Data []byte `json:"d"`
}

// cacheTTL is how long the answer to r may be cached: the request's Cache-Control max-age,
// else the key's cache_ttl_s, at most CACHE_MAX_TTL; 0 when it is not to be cached (no
// cache, neither set, or Cache-Control: no-cache / no-store).
func (s *Server) cacheTTL(r *http.Request, k *store.Key) time.Duration {
	if s.cache == nil {
		return 0
	}
	var ttl time.Duration
	if k.CacheTTLS != nil {
		ttl = time.Duration(*k.CacheTTLS) * time.Second
	}
	for _, v := range r.Header.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if d == "no-cache" || d == "no-store" {
				return 0
			}
			if n, ok := strings.CutPrefix(d, "max-age="); ok {
				if secs, err := strconv.Atoi(n); err == nil && secs >= 0 {
					ttl = time.Duration(secs) * time.Second
				}
			}
		}
	}
	return min(ttl, s.cache.maxTTL)
}

// cacheKey is the entry name of a request: a hash of the key's id, the endpoint, whether it
// streams, and the request body normalized (parsed and written back: members sorted, no
// white space, numbers as written). Answers are never shared across keys.
func cacheKey(keyID, endpoint string, stream bool, body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", false
	}
	norm, err := json.Marshal(v)
	if err != nil {
		return "", false
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte(keyID), []byte(endpoint), []byte(strconv.FormatBool(stream)), norm} {
		h.Write(part)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), true
}

// get returns the live entry named name, if any. A cache that cannot be read is a miss.
func (c *respCache) get(ctx context.Context, name string, now time.Time) (*cacheEntry, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	v, err := c.kv.Get(ctx, name)
	if err != nil {
		return nil, false
	}
	var e cacheEntry
	if json.Unmarshal(v.Value(), &e) != nil || now.UnixMilli() >= e.Expires {
		return nil, false
	}
	return &e, true
}

// put stores e under name for ttl; it is dropped if it is larger than CACHE_MAX_ENTRY_BYTES
// or the bucket is full.
func (c *respCache) put(ctx context.Context, name string, e *cacheEntry, ttl time.Duration, now time.Time) error {
	e.Expires = now.Add(ttl).UnixMilli()
	b, err := json.Marshal(e)
	if err != nil || len(b) > c.maxEntry {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, err = c.kv.Put(ctx, name, b)
	return err
}

// cacheFill collects an answer as it is written, to be cached once it succeeds.
type cacheFill struct {
	name string
	ttl  time.Duration
	e    cacheEntry
	over bool // larger than an entry may be
}

func (f *cacheFill) event(c *respCache, name string, data []byte) {
	if f.over {
		return
	}
	if f.e.size += len(name) + len(data)*4/3 + 16; f.e.size > c.maxEntry {
		f.over, f.e.Events = true, nil
		return
	}
	f.e.Events = append(f.e.Events, cacheEvent{Name: name, Data: bytes.Clone(data)})
}

// store caches a successful answer (body for a whole one, the events collected for a stream).
func (a *answer) storeCache(f *jobs.Final, body []byte) {
	fill := a.cache
	if fill == nil || fill.over || f.Status != store.StatusSucceeded || f.StatusCode != http.StatusOK {
		return
	}
	fill.e.Status, fill.e.Usage = f.StatusCode, f.Usage
	if !a.job.Stream {
		fill.e.Body = body
	}
	if err := a.s.cache.put(a.r.Context(), fill.name, &fill.e, fill.ttl, a.s.now()); err != nil {
		a.s.jobLog(a.r.Context(), a.job.RequestID(), a.job.ID).DebugContext(a.r.Context(), "cache put", "err", err)
	}
}

// serveHit answers a request from the cache: the whole answer, or the stream replayed as a
// stream, with Sluice-Cache: hit. The hit gets a job id and a ledger row at $0 marked as a
// cache hit (through the outcomes stream, as a worker's outcome, or Postgres without one).
func (s *Server) serveHit(w http.ResponseWriter, r *http.Request, key *store.Key, endpoint string, p *parsed, e *cacheEntry) {
	now := s.now()
	job := &jobs.Job{ID: ids.NewAt("job", now), KeyID: key.ID, Endpoint: endpoint, Model: p.model, Stream: p.stream,
		CreatedAt: now, Deadline: now.Add(s.cfg.JobTimeout)}
	w.Header().Set("Sluice-Job-Id", job.ID)
	w.Header().Set("Sluice-Cache", "hit")
	if p.stream {
		a := newAnswer(s, w, r, job)
		for _, ev := range e.Events {
			if a.event(ev.Name, ev.Data); a.broken {
				break
			}
		}
		if !a.broken {
			a.final(&jobs.Final{JobID: job.ID, Status: store.StatusSucceeded, StatusCode: http.StatusOK}, nil, false)
		}
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(e.Body)))
		w.WriteHeader(e.Status)
		_, _ = w.Write(e.Body)
		_ = http.NewResponseController(w).Flush()
	}
	row := job.Row(1)
	o := store.Outcome{JobID: job.ID, Status: store.StatusSucceeded, StatusCode: e.Status, Usage: e.Usage,
		Charge: e.Usage != nil, CacheHit: true, Job: &row}
	if !p.stream {
		o.Response = e.Body
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	var err error
	if s.outcomes != nil {
		_, err = s.outcomes.Publish(ctx, &o)
	}
	if s.outcomes == nil || errors.Is(err, jobs.ErrOutcomeTooLarge) {
		_, err = s.store.FinishJob(ctx, o)
	}
	if err != nil {
		s.jobLog(ctx, w.Header().Get("X-Request-Id"), job.ID).WarnContext(ctx, "record cache hit", "err", err)
	}
}
