package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// slowResult is the in-flight memory section.
type slowResult struct {
	Jobs        int            `json:"jobs"`
	Latency     string         `json:"upstream_latency"`
	Reached     int64          `json:"in_flight_reached"`
	RampSecs    float64        `json:"ramp_s"`
	Idle        slowProcs      `json:"idle"`
	Steady      slowProcs      `json:"steady"`
	After       slowProcs      `json:"after_release"`
	AfterSecs   float64        `json:"release_s"`
	Returned    bool           `json:"returned_to_baseline"`
	PerJob      slowPerJob     `json:"per_job"`
	Outcomes    map[string]int `json:"client_outcomes"`
	SampleError string         `json:"sample_error,omitempty"`
}

type slowProcs struct {
	Ingress procSample `json:"ingress"`
	Worker  procSample `json:"worker"`
}

type slowPerJob struct {
	IngressGoroutines float64 `json:"ingress_goroutines"`
	WorkerGoroutines  float64 `json:"worker_goroutines"`
	IngressRSS        float64 `json:"ingress_rss_bytes"`
	WorkerRSS         float64 `json:"worker_rss_bytes"`
	Goroutines        float64 `json:"goroutines"`
	RSS               float64 `json:"rss_bytes"`
	// Stack and Heap split the combined growth: goroutine stacks, heap in use.
	Stack float64 `json:"stack_inuse_bytes"`
	Heap  float64 `json:"heap_inuse_bytes"`
}

// sample takes n scrapes of both processes, gap apart, and returns the median of each series.
func (s *stack) sample(ctx context.Context, n int, gap time.Duration) (slowProcs, error) {
	var ing, wrk []procSample
	for i := range n {
		if i > 0 && !wait(ctx, gap) {
			return slowProcs{}, ctx.Err()
		}
		a, err := scrape(ctx, s.http, "http://"+s.ingAddr)
		if err != nil {
			return slowProcs{}, err
		}
		b, err := scrape(ctx, s.http, "http://"+s.wrkAddr)
		if err != nil {
			return slowProcs{}, err
		}
		ing, wrk = append(ing, a), append(wrk, b)
	}
	return slowProcs{Ingress: medianSample(ing), Worker: medianSample(wrk)}, nil
}

// medianSample is the median of each series of v.
func medianSample(v []procSample) procSample {
	pick := func(f func(procSample) float64) float64 {
		xs := make([]float64, len(v))
		for i := range v {
			xs[i] = f(v[i])
		}
		return median(xs)
	}
	return procSample{Goroutines: pick(func(p procSample) float64 { return p.Goroutines }),
		RSS:   pick(func(p procSample) float64 { return p.RSS }),
		Stack: pick(func(p procSample) float64 { return p.Stack }),
		Heap:  pick(func(p procSample) float64 { return p.Heap })}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// upstreamStats reads a fake upstream's GET /stats.
func (s *stack) upstreamStats(ctx context.Context, addr string) (requests, open int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stats", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := s.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return 0, 0, err
	}
	defer httpbody.Close(resp)
	var st struct {
		Requests  map[string]int64 `json:"requests"`
		OpenConns int64            `json:"open_conns"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, 0, err
	}
	for _, n := range st.Requests {
		requests += n
	}
	return requests, st.OpenConns, nil
}

// releaseWait bounds how long the slow section waits for the processes to return to their
// idle goroutine counts once its clients are gone.
const releaseWait = 20 * time.Second

// slowSection restarts Sluice with WORKER_CONCURRENCY = cfg.slowJobs, measures both processes
// at rest, holds cfg.slowJobs sync requests in flight against the slow upstream, measures
// again, then cancels the clients and watches the processes return to their baseline.
func (s *stack) slowSection(ctx context.Context) (slowResult, error) {
	n := s.cfg.slowJobs
	res := slowResult{Jobs: n, Latency: s.cfg.slowLatency.String(), Outcomes: map[string]int{}}
	logf("slow: restarting Sluice with WORKER_CONCURRENCY=%d", n)
	if err := s.startSluice(ctx, n); err != nil {
		return res, err
	}
	if err := s.waitRoutes(ctx); err != nil { // also warms both processes' code paths
		return res, err
	}
	wait(ctx, 2*time.Second)
	var err error
	if res.Idle, err = s.sample(ctx, 5, 200*time.Millisecond); err != nil {
		return res, err
	}
	before, _, err := s.upstreamStats(ctx, s.slowAddr)
	if err != nil {
		return res, err
	}
	logf("slow: idle ingress %.0f goroutines %.1f MiB, worker %.0f goroutines %.1f MiB; sending %d requests",
		res.Idle.Ingress.Goroutines, res.Idle.Ingress.RSS/(1<<20), res.Idle.Worker.Goroutines, res.Idle.Worker.RSS/(1<<20), n)

	holdCtx, release := context.WithCancel(ctx)
	defer release()
	client := newClient(n, s.cfg.h2c)
	defer client.CloseIdleConnections()
	hold := s.sluiceReq(false)
	hold.body = chatBody(slowModel, false, false)
	var mu sync.Mutex
	var holders sync.WaitGroup
	began := time.Now()
	for range n {
		holders.Go(func() {
			req, _, err := hold.build(holdCtx)
			if err == nil {
				_, err = do(client, req, nil, http.StatusOK, false)
			}
			outcome := "ok"
			switch {
			case err != nil && holdCtx.Err() != nil:
				outcome = "released"
			case err != nil:
				outcome = err.Error()
				if len(outcome) > 120 {
					outcome = outcome[:120]
				}
			}
			mu.Lock()
			res.Outcomes[outcome]++
			mu.Unlock()
		})
	}
	// Steady state: every request has reached the slow upstream.
	deadline := time.Now().Add(min(s.cfg.slowLatency*2/3, 30*time.Second))
	for ctx.Err() == nil && time.Now().Before(deadline) {
		got, _, err := s.upstreamStats(ctx, s.slowAddr)
		if err == nil {
			res.Reached = got - before
		}
		if res.Reached >= int64(n) {
			break
		}
		wait(ctx, 100*time.Millisecond)
	}
	res.RampSecs = time.Since(began).Seconds()
	logf("slow: %d of %d in flight after %.1fs; sampling", res.Reached, n, res.RampSecs)
	wait(ctx, time.Second)
	res.Steady, err = s.sample(ctx, 5, 200*time.Millisecond)
	if err != nil {
		res.SampleError = err.Error()
	}
	release()
	holders.Wait()
	client.CloseIdleConnections()
	d := float64(n)
	res.PerJob = slowPerJob{
		IngressGoroutines: (res.Steady.Ingress.Goroutines - res.Idle.Ingress.Goroutines) / d,
		WorkerGoroutines:  (res.Steady.Worker.Goroutines - res.Idle.Worker.Goroutines) / d,
		IngressRSS:        (res.Steady.Ingress.RSS - res.Idle.Ingress.RSS) / d,
		WorkerRSS:         (res.Steady.Worker.RSS - res.Idle.Worker.RSS) / d,
	}
	res.PerJob.Goroutines = res.PerJob.IngressGoroutines + res.PerJob.WorkerGoroutines
	res.PerJob.RSS = res.PerJob.IngressRSS + res.PerJob.WorkerRSS
	res.PerJob.Stack = (res.Steady.Ingress.Stack + res.Steady.Worker.Stack - res.Idle.Ingress.Stack - res.Idle.Worker.Stack) / d
	res.PerJob.Heap = (res.Steady.Ingress.Heap + res.Steady.Worker.Heap - res.Idle.Ingress.Heap - res.Idle.Worker.Heap) / d
	logf("slow: steady ingress %.0f goroutines %.1f MiB, worker %.0f goroutines %.1f MiB; released, waiting for baseline",
		res.Steady.Ingress.Goroutines, res.Steady.Ingress.RSS/(1<<20), res.Steady.Worker.Goroutines, res.Steady.Worker.RSS/(1<<20))

	// Back to baseline: goroutines within a small slack of idle (a scrape in progress, the
	// worker's pending fetch come and go). RSS is reported as it is: the Go runtime returns
	// freed memory to the OS only gradually.
	const slack = 8
	released := time.Now()
	deadline = time.Now().Add(releaseWait)
	for ctx.Err() == nil {
		ps, err := s.sample(ctx, 1, 0)
		if err == nil {
			res.After = ps
			if ps.Ingress.Goroutines <= res.Idle.Ingress.Goroutines+slack &&
				ps.Worker.Goroutines <= res.Idle.Worker.Goroutines+slack {
				res.Returned = true
				break
			}
		}
		if time.Now().After(deadline) {
			break
		}
		wait(ctx, 250*time.Millisecond)
	}
	res.AfterSecs = time.Since(released).Seconds()
	logf("slow: returned=%v after %.1fs: ingress %.0f goroutines, worker %.0f goroutines", res.Returned, res.AfterSecs,
		res.After.Ingress.Goroutines, res.After.Worker.Goroutines)
	return res, nil
}
