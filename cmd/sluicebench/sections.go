package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// syncPoint is one concurrency level of the sync section (or the stream section).
type syncPoint struct {
	Concurrency int        `json:"concurrency"`
	Direct      loadResult `json:"direct"`
	Sluice      loadResult `json:"sluice"`
	// AddedP50 is Sluice's p50 minus the direct p50 (of TTFB for streams), in ms.
	AddedP50 float64  `json:"added_p50_ms"`
	CPU      cpuShare `json:"sluice_cpu"`
	// DirectCPU is the machine's CPU use during the direct run.
	DirectCPU cpuShare `json:"direct_cpu"`
}

// paired is the c=1 run that alternates a direct and a Sluice request, so both see the same
// machine state; the median of the per-pair differences is the added latency.
type paired struct {
	Pairs        int     `json:"pairs"`
	MedianAdded  float64 `json:"median_added_ms"`
	DirectP50    float64 `json:"direct_p50_ms"`
	SluiceP50    float64 `json:"sluice_p50_ms"`
	P90Added     float64 `json:"p90_added_ms"`
	Errors       int     `json:"errors"`
	FirstErr     string  `json:"first_error,omitempty"`
	DurationSecs float64 `json:"duration_s"`
}

func (s *stack) directReq(stream bool) request {
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer sk-bench"}}
	return request{method: http.MethodPost, url: "http://" + s.fastAddr + "/v1/chat/completions", header: h,
		body: chatBody(fastModel, stream, true), stream: stream}
}

func (s *stack) sluiceReq(stream bool) request {
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + s.key}}
	return request{method: http.MethodPost, url: "http://" + s.ingAddr + "/v1/chat/completions", header: h,
		body: chatBody(fastModel, stream, false), stream: stream}
}

// measure runs l with the CPU meter open over its measured window.
func (s *stack) measure(ctx context.Context, l load) (loadResult, cpuShare) {
	m := newCPUMeter(s.pids(), s.dbName)
	var share cpuShare
	l.onMeasure = func(open bool) {
		if open {
			m.open()
		} else {
			share = m.close()
		}
	}
	return l.run(ctx), share
}

// loadSection runs, for each concurrency, the direct load and then the same load through
// Sluice.
func (s *stack) loadSection(ctx context.Context, name string, stream bool, concs []int) []syncPoint {
	var pts []syncPoint
	for _, c := range concs {
		if ctx.Err() != nil {
			break
		}
		pt := syncPoint{Concurrency: c}
		logf("%s c=%d: direct to the fake upstream (%s warm-up + %s)", name, c, s.cfg.warmup, s.cfg.duration)
		pt.Direct, pt.DirectCPU = s.measure(ctx, load{req: s.directReq(stream), conc: c, warmup: s.cfg.warmup, dur: s.cfg.duration, h2c: s.cfg.h2c})
		logf("%s c=%d: through Sluice", name, c)
		pt.Sluice, pt.CPU = s.measure(ctx, load{req: s.sluiceReq(stream), conc: c, warmup: s.cfg.warmup, dur: s.cfg.duration, h2c: s.cfg.h2c})
		if stream {
			pt.AddedP50 = pt.Sluice.TTFB.P50 - pt.Direct.TTFB.P50
		} else {
			pt.AddedP50 = pt.Sluice.Latency.P50 - pt.Direct.Latency.P50
		}
		logf("%s c=%d: direct %.0f req/s p50 %.3f ms; Sluice %.0f req/s p50 %.3f ms (errors %d/%d)", name, c,
			pt.Direct.Rate, pt.Direct.Latency.P50, pt.Sluice.Rate, pt.Sluice.Latency.P50, pt.Direct.Errors, pt.Sluice.Errors)
		pts = append(pts, pt)
	}
	return pts
}

// pairedRun alternates direct and Sluice requests on one goroutine for dur after a short
// warm-up, swapping their order every pair.
func (s *stack) pairedRun(ctx context.Context, dur time.Duration) paired {
	const maxPairs = 1 << 17
	dc, sc := newClient(1, s.cfg.h2c), newClient(1, s.cfg.h2c)
	defer dc.CloseIdleConnections()
	defer sc.CloseIdleConnections()
	dreq, dbody, _ := s.directReq(false).build(ctx)
	sreq, sbody, _ := s.sluiceReq(false).build(ctx)
	diffs := make([]time.Duration, 0, maxPairs)
	var dh, sh hist
	res := paired{}
	one := func(c *http.Client, req *http.Request, b *replayBody) (time.Duration, error) {
		b.off = 0
		t0 := time.Now()
		_, err := do(c, req, nil, http.StatusOK, false)
		return time.Since(t0), err
	}
	warm := time.Now().Add(s.cfg.warmup / 2)
	began := time.Time{}
	end := time.Now().Add(s.cfg.warmup/2 + dur)
	for i := 0; ctx.Err() == nil && time.Now().Before(end) && len(diffs) < maxPairs; i++ {
		var d, sl time.Duration
		var e1, e2 error
		if i%2 == 0 {
			d, e1 = one(dc, dreq, dbody)
			sl, e2 = one(sc, sreq, sbody)
		} else {
			sl, e2 = one(sc, sreq, sbody)
			d, e1 = one(dc, dreq, dbody)
		}
		if e := cmpErr(e1, e2); e != nil {
			res.Errors++
			if res.FirstErr == "" {
				res.FirstErr = e.Error()
			}
			continue
		}
		if time.Now().Before(warm) {
			continue
		}
		if began.IsZero() {
			began = time.Now()
		}
		diffs = append(diffs, sl-d)
		dh.record(d)
		sh.record(sl)
	}
	res.Pairs = len(diffs)
	if !began.IsZero() {
		res.DurationSecs = time.Since(began).Seconds()
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		res.MedianAdded = ms(diffs[len(diffs)/2])
		res.P90Added = ms(diffs[len(diffs)*9/10])
	}
	res.DirectP50, res.SluiceP50 = ms(dh.quantile(0.5)), ms(sh.quantile(0.5))
	return res
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// asyncResult is the async section.
type asyncResult struct {
	Jobs        int        `json:"jobs"`
	Concurrency int        `json:"concurrency"`
	Submit      loadResult `json:"submit"`
	// WorkerPaused: the worker was stopped while jobs were submitted and started afterwards.
	WorkerPaused bool `json:"worker_paused"`
	// DrainSecs runs from the first submission (or, with the worker paused, from the worker's
	// start) until no job is queued or running.
	DrainSecs float64  `json:"drain_s"`
	DrainRate float64  `json:"drain_jobs_per_s"`
	Drained   bool     `json:"drained"`
	Failed    int      `json:"failed"`
	Canceled  int      `json:"canceled"`
	SubmitCPU cpuShare `json:"submit_cpu"`
	DrainCPU  cpuShare `json:"drain_cpu"`
}

// asyncSection submits cfg.asyncJobs jobs with POST /v1/jobs from cfg.asyncConc goroutines,
// then polls GET /v1/jobs until none is queued or running.
func (s *stack) asyncSection(ctx context.Context) asyncResult {
	sub, _ := json.Marshal(map[string]any{"endpoint": "/v1/chat/completions",
		"body": json.RawMessage(chatBody(fastModel, false, false))})
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + s.asyncKey}}
	res := asyncResult{Jobs: s.cfg.asyncJobs, Concurrency: s.cfg.asyncConc, WorkerPaused: s.cfg.asyncPaused}
	if s.cfg.asyncPaused {
		logf("async: stopping the worker while jobs are submitted")
		if err := s.stopWorker(); err != nil {
			logf("async: stop worker: %v", err)
		}
	}
	logf("async: submitting %d jobs from %d clients", s.cfg.asyncJobs, s.cfg.asyncConc)
	drainMeter := newCPUMeter(s.pids(), s.dbName)
	drainMeter.open()
	began := time.Now()
	res.Submit, res.SubmitCPU = s.measure(ctx, load{conc: s.cfg.asyncConc, h2c: s.cfg.h2c, count: int64(s.cfg.asyncJobs),
		req: request{method: http.MethodPost, url: "http://" + s.ingAddr + "/v1/jobs", header: h, body: sub,
			want: http.StatusAccepted}})
	logf("async: %d accepted (%d errors) at %.0f/s; waiting for the queue to drain", res.Submit.OK,
		res.Submit.Errors, res.Submit.Rate)
	if s.cfg.asyncPaused {
		// The drain is then the worker's alone: timed from its start, measured on its new pid.
		if err := s.startWorker(ctx, s.cfg.workerConc); err != nil {
			logf("async: restart worker: %v", err)
			return res
		}
		drainMeter = newCPUMeter(s.pids(), s.dbName)
		drainMeter.open()
		began = time.Now()
	}
	deadline := time.Now().Add(s.cfg.drainTimeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		q, err1 := s.countJobs(ctx, "queued", 1)
		r, err2 := s.countJobs(ctx, "running", 1)
		if err1 == nil && err2 == nil && q == 0 && r == 0 {
			res.Drained = true
			break
		}
		wait(ctx, 100*time.Millisecond)
	}
	res.DrainSecs = time.Since(began).Seconds()
	res.DrainCPU = drainMeter.close()
	if res.Drained {
		res.DrainRate = float64(res.Submit.OK) / res.DrainSecs
	}
	res.Failed, _ = s.countJobs(ctx, "failed", s.cfg.asyncJobs)
	res.Canceled, _ = s.countJobs(ctx, "canceled", s.cfg.asyncJobs)
	logf("async: drained=%v in %.2fs (%.0f jobs/s); failed %d, canceled %d", res.Drained, res.DrainSecs,
		res.DrainRate, res.Failed, res.Canceled)
	return res
}

// countJobs counts the async key's jobs with status, up to limit, through GET /v1/jobs.
func (s *stack) countJobs(ctx context.Context, status string, limit int) (int, error) {
	n, after := 0, ""
	for n < limit {
		q := url.Values{"status": {status}, "limit": {fmt.Sprint(min(100, limit-n))}}
		if after != "" {
			q.Set("after", after)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.ingAddr+"/v1/jobs?"+q.Encode(), nil)
		if err != nil {
			return n, err
		}
		req.Header.Set("Authorization", "Bearer "+s.asyncKey)
		resp, err := s.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
		if err != nil {
			return n, err
		}
		var list struct {
			Data    []json.RawMessage `json:"data"`
			LastID  *string           `json:"last_id"`
			HasMore bool              `json:"has_more"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&list)
		httpbody.Close(resp)
		if err != nil {
			return n, err
		}
		if resp.StatusCode != http.StatusOK {
			return n, fmt.Errorf("GET /v1/jobs: %d", resp.StatusCode)
		}
		n += len(list.Data)
		if !list.HasMore || list.LastID == nil {
			break
		}
		after = *list.LastID
	}
	return n, nil
}

// cacheResult is the response cache's hit path at c=1: the same request with
// Cache-Control: max-age, so every request after the first is answered from the cache
// (no worker, no upstream), beside the direct call to the fake upstream.
type cacheResult struct {
	Hits     loadResult `json:"hits"`
	Direct   loadResult `json:"direct"`
	AddedP50 float64    `json:"added_p50_ms"`
}

func (s *stack) cacheSection(ctx context.Context) cacheResult {
	req := s.sluiceReq(false)
	req.header = req.header.Clone()
	req.header.Set("Cache-Control", "max-age=3600")
	logf("cache c=1: one request repeated, answered from the response cache")
	var r cacheResult
	direct := load{req: s.directReq(false), conc: 1, warmup: s.cfg.warmup, dur: s.cfg.duration / 2, h2c: s.cfg.h2c}
	r.Direct = direct.run(ctx)
	hits := load{req: req, conc: 1, warmup: s.cfg.warmup, dur: s.cfg.duration / 2, h2c: s.cfg.h2c}
	r.Hits = hits.run(ctx)
	r.AddedP50 = r.Hits.Latency.P50 - r.Direct.Latency.P50
	logf("cache c=1: hits p50 %.3f ms (%.0f req/s), direct p50 %.3f ms: the hit path adds %.3f ms", r.Hits.Latency.P50,
		r.Hits.Rate, r.Direct.Latency.P50, r.AddedP50)
	return r
}
