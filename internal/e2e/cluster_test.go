package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// The cluster tests (make test-cluster) run Sluice on a 3-node JetStream cluster, with both
// streams and consumers at 3 replicas, two ingresses and two workers, under sync and async
// load at clusterConc callers, and break one part mid-load: the stream leader's NATS node,
// a nats-server process killed with SIGKILL (TestClusterLeaderKilled_Issue13_3), or a worker
// process (TestClusterWorkerKilled_Issue13_3, on nodes embedded in the test process). SLUICE_CLUSTER_JOBS sets the jobs per case.
const clusterConc = 32

func clusterJobs(t *testing.T) int {
	if v := os.Getenv("SLUICE_CLUSTER_JOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			t.Fatalf("SLUICE_CLUSTER_JOBS=%q: want a number ≥ 100", v)
		}
		return n
	}
	return 2000
}

// clusterLoad drives total requests, alternately sync and async, from clusterConc callers
// spread over the ingresses at bases; done counts the requests answered so far.
type clusterLoad struct {
	lg   loadLog
	done atomic.Int64
	wg   sync.WaitGroup
}

func startClusterLoad(bases []string, token string, total int) *clusterLoad {
	l := &clusterLoad{}
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clusterConc}}
	var next atomic.Int64
	for range clusterConc {
		l.wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < total; i = int(next.Add(1)) - 1 {
				kind := "sync"
				if i%2 == 1 {
					kind = "async"
				}
				l.lg.add(kind, loadRequest(c, bases[i%len(bases)], token, kind, i))
				l.done.Add(1)
			}
		})
	}
	return l
}

// wait waits for the load to finish and returns its results.
func (l *clusterLoad) wait() []callResult {
	l.wg.Wait()
	return l.lg.all()
}

// at waits until n requests have been answered.
func (l *clusterLoad) at(t *testing.T, n int, what string) {
	t.Helper()
	eventually(t, 120*time.Second, what, func() bool { return l.done.Load() >= int64(n) })
}

// clusterVerdict checks the load's results: every request was accepted (202, or a sync 200
// with the right answer) or refused cleanly (503 overloaded_error with Retry-After); every
// accepted job reaches a terminal state (none lost) and succeeds; no job is charged twice
// and the ledger adds up to what the upstream reported (exactly, when exact is set: no
// worker died mid-call, so no upstream answer went unrecorded).
func clusterVerdict(t *testing.T, s *stack, up *providertest.Upstream, results []callResult, exact bool) {
	t.Helper()
	var accepted, refusedIDs []string
	refused := map[string]int{}
	for _, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("%s request: %v after %s: no answer", r.kind, r.err, r.took)
		case r.code == http.StatusServiceUnavailable:
			if typ, _, _ := apiErrType(r.body); typ != "overloaded_error" || r.hdr.Get("Retry-After") == "" {
				t.Errorf("%s request: 503 %q (Retry-After %q), want overloaded_error with Retry-After", r.kind, r.body, r.hdr.Get("Retry-After"))
			}
			refused[r.kind]++
			if id := r.hdr.Get("Sluice-Job-Id"); id != "" {
				refusedIDs = append(refusedIDs, id) // stored as a row, then refused: must end failed, uncharged
			}
		case r.kind == "async":
			var j jobObj
			if r.code != http.StatusAccepted || json.Unmarshal(r.body, &j) != nil || j.ID == "" {
				t.Errorf("async submit: %d %s, want 202 with a job or a clean 503", r.code, r.body)
				continue
			}
			accepted = append(accepted, j.ID)
		case r.code != http.StatusOK:
			t.Errorf("sync request: %d %s, want 200 or a clean 503", r.code, r.body)
		default:
			checkAnswer(t, r)
			accepted = append(accepted, r.hdr.Get("Sluice-Job-Id"))
		}
	}
	waitStatus(t, s, accepted, "", 120*time.Second)
	s.settled()
	var terminal, doubled int
	var charged int64
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM jobs WHERE id = ANY($1) AND finished_at IS NOT NULL),
			(SELECT count(*) - count(DISTINCT job_id) FROM usage_ledger),
			(SELECT COALESCE(sum(prompt_tokens + completion_tokens), 0) FROM usage_ledger WHERE NOT estimated)`,
		accepted).Scan(&terminal, &doubled, &charged); err != nil {
		t.Fatal(err)
	}
	lost := len(accepted) - terminal
	if lost != 0 {
		t.Errorf("lost = %d accepted jobs never reached a terminal state, want 0", lost)
	}
	if doubled != 0 {
		t.Errorf("double-charged = %d ledger rows repeat a job, want 0", doubled)
	}
	waitSucceeded(t, s, accepted, 10*time.Second)
	sum := checkCharges(t, s, up)
	// A request refused with 503 after its publish's acks were lost (a leader killed) may
	// still have been stored, and run by a worker: the client was told no, so the job ends
	// failed and is never charged, but the upstream answered it. Those answers are the only
	// ones the ledger may lack; each is one of this load's equal-sized answers.
	if len(refusedIDs) > 0 {
		var notFailed, chargedRefused int
		if err := s.db.Pool.QueryRow(context.Background(), `SELECT
				(SELECT count(*) FROM jobs WHERE id = ANY($1) AND status <> 'failed'),
				(SELECT count(*) FROM usage_ledger WHERE job_id = ANY($1))`, refusedIDs).Scan(&notFailed, &chargedRefused); err != nil {
			t.Fatal(err)
		}
		if notFailed != 0 || chargedRefused != 0 {
			t.Errorf("of %d refused jobs, %d do not read failed and %d are charged; want 0 and 0", len(refusedIDs), notFailed, chargedRefused)
		}
	}
	st := up.Stats()
	reported := st.PromptTokens + st.CompletionTokens
	unrecorded := st.Succeeded - int64(sum.rows)
	if exact {
		refusedTotal := 0
		for _, n := range refused {
			refusedTotal += n
		}
		switch {
		case unrecorded < 0 || unrecorded > int64(refusedTotal):
			t.Errorf("upstream answered %d calls, the ledger has %d rows: %d unrecorded, want 0 to the %d refused",
				st.Succeeded, sum.rows, unrecorded, refusedTotal)
		case st.Succeeded > 0 && charged*st.Succeeded != reported*int64(sum.rows):
			t.Errorf("ledger = %d tokens in %d rows, Σ upstream usage = %d in %d answers: want the ledger to hold exactly its answers' usage",
				charged, sum.rows, reported, st.Succeeded)
		}
	}
	t.Logf("requests %d: accepted %d (all terminal: lost %d), refused with 503 %v; double-charged %d; "+
		"ledger %d tokens in %d rows, upstream reported %d tokens in %d answers (%d for refused requests)",
		len(results), len(accepted), lost, refused, doubled, charged, sum.rows, reported, st.Succeeded, unrecorded)
}

// goroutinePeak samples this process's goroutines every 50 ms until stop is called, which
// returns the peak.
func goroutinePeak() (stop func() int) {
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return sync.OnceValue(func() int { close(done); wg.Wait(); return int(peak.Load()) })
}

// TestClusterLeaderKilled_Issue13_3 SIGKILLs the nats-server process leading SLUICE_JOBS a
// quarter of the way into the load (the cluster is three real processes, so the node dies
// as a machine would: no shutdown, no goodbye to peers or clients) and starts it again on
// its store at half way. Publishes during the election are retried (deduplicated by job
// id) or refused cleanly; nothing accepted is lost or charged twice, and the ledger equals
// the upstream's reported usage.
func TestClusterLeaderKilled_Issue13_3(t *testing.T) {
	t.Parallel()
	c := startNATSProcs(t, 3)
	const k = 32
	s := newStack(t, stackOpts{natsURL: c.url, replicas: 3, concurrency: k, ackWait: 5 * time.Second, maxWaiting: 64,
		jobTimeout: 60 * time.Second})
	up, srv := providertest.Start(t, providertest.Config{Latency: 5 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 2)
	key := s.newKey(nil)
	s.startWorker()
	base2, _ := s.startIngress()
	baseline := runtime.NumGoroutine()
	peak := goroutinePeak()
	defer peak()

	total := clusterJobs(t)
	load := startClusterLoad([]string{s.base, base2}, key.Key, total)
	load.at(t, total/4, "a quarter of the load")
	var leader int
	eventually(t, 30*time.Second, "SLUICE_JOBS to have a leader", func() bool { leader = c.streamLeader(t, jobs.StreamName); return leader >= 0 })
	t.Logf("SIGKILL node %s, leader of %s (of %s: %d)", c.nodes[leader].name, jobs.StreamName, jobs.OutcomeStreamName,
		c.streamLeader(t, jobs.OutcomeStreamName)+1)
	before := load.done.Load()
	c.kill(leader)
	eventually(t, 60*time.Second, "a new SLUICE_JOBS leader", func() bool { return c.streamLeader(t, jobs.StreamName) >= 0 })
	t.Logf("new leader n%d, %d requests answered while it was elected", c.streamLeader(t, jobs.StreamName)+1,
		load.done.Load()-before)
	load.at(t, total/2, "half the load")
	c.restart(t, leader)
	results := load.wait()
	top := peak()

	// Both ingresses and both workers run in this process, beside the load's clients.
	bound := 2*(2*s.icfg.MaxConns+64) + 2*(5*k+64) + 3*clusterConc
	if top-baseline > bound {
		t.Errorf("goroutines peaked %d over the %d before the load, past the bound %d", top-baseline, baseline, bound)
	}
	t.Logf("goroutines: %d before the load, peak %d (bound %d over the baseline)", baseline, top, bound)
	clusterVerdict(t, s, up, results, true)
}

// TestClusterWorkerKilled_Issue13_3 SIGKILLs one of two worker processes a third of the way
// into the load and starts a replacement at half way; the killed worker's jobs are
// redelivered (AckWait 3 s) and finish elsewhere. Each worker process stays within its
// goroutine bound (5k + 64 for k slots).
func TestClusterWorkerKilled_Issue13_3(t *testing.T) {
	t.Parallel()
	c := jobstest.NewCluster(t, 3)
	const k = 16
	s := newStack(t, stackOpts{natsURL: c.URL, replicas: 3, noWorker: true, ackWait: 3 * time.Second, maxWaiting: 64,
		jobTimeout: 60 * time.Second})
	up, srv := providertest.Start(t, providertest.Config{Latency: 5 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 2)
	key := s.newKey(nil)
	var mu sync.Mutex
	var workers []*proc
	startWorker := func() *proc {
		addr := freeAddr(t)
		p := startProc(t, "worker", addr, s.workerEnv(addr, k))
		mu.Lock()
		defer mu.Unlock()
		workers = append(workers, p)
		return p
	}
	w1 := startWorker()
	startWorker()
	base2, _ := s.startIngress()

	// Sample each live worker process's goroutines while the load runs.
	var peakG atomic.Int64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			mu.Lock()
			ws := append([]*proc(nil), workers...)
			mu.Unlock()
			for _, w := range ws {
				if n, ok := scrapeGauge("http://"+w.addr, "go_goroutines"); ok && int64(n) > peakG.Load() {
					peakG.Store(int64(n))
				}
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	})
	defer func() {
		select {
		case <-stopSampling:
		default:
			close(stopSampling)
		}
		sampler.Wait()
	}()

	total := clusterJobs(t)
	load := startClusterLoad([]string{s.base, base2}, key.Key, total)
	load.at(t, total/3, "a third of the load")
	w1.signal(syscall.SIGKILL)
	mu.Lock()
	workers = workers[1:]
	mu.Unlock()
	load.at(t, total/2, "half the load")
	startWorker()
	results := load.wait()
	close(stopSampling)
	sampler.Wait()

	if bound := int64(5*k + 64); peakG.Load() > bound {
		t.Errorf("a worker process peaked at %d goroutines, past its bound %d", peakG.Load(), bound)
	}
	t.Logf("worker goroutines peaked at %d (bound %d)", peakG.Load(), 5*k+64)
	clusterVerdict(t, s, up, results, false)
}

// scrapeGauge reads one unlabelled sample from base/metrics without failing the test (the
// process may be gone).
func scrapeGauge(base, name string) (float64, bool) {
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
