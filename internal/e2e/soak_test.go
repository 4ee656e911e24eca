package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// The fault storm (`make soak`; a short run is part of `make test`). Real ingress, worker and
// fake-upstream processes, so that each can be sampled on its own, take SLUICE_SOAK_REQUESTS
// requests (3,000 by default) from soakClients clients, half of them streamed, while the fake
// upstream fails in every ordinary way. The test asserts only bounds and exact accounting,
// never latency or throughput, so a slow or busy machine makes it slower, not flaky.
const (
	soakMix = "ok=60,429=10,503=8,504=4,reset=5,truncate=5,midstream=3,drip=3,hang=2"

	soakClients = 200
	soakWarmUp  = 2 * soakClients // requests before the baseline is taken
	// WORKER_CONCURRENCY (k) of the one worker process.
	soakConcurrency = 64
	// INGRESS_MAX_CONNS, and INGRESS_MAX_WAITING set equal to it: every client's connection
	// plus one each for the sampler's scrapes and the set-up admin calls, and a few spare, so
	// no client's keep-alive connection ever waits in the accept backlog behind an idle one.
	soakMaxConns = soakClients + 8
	// Channels to the one fake upstream, all serving soakModel. A 429 or 503 cools its channel
	// for Retry-After (1s) for every job (by design: it is the upstream's limit for that key),
	// and under this mix a channel gets one every ~5 requests; with a single channel the worker
	// would spend the run waiting out cool-downs rather than under load.
	soakChannels = 64
	soakModel    = "soak-model"

	// Deadlines, shortened for the run. The ledger must equal, exactly, the usage the fake
	// upstream counts for the answers it wrote in full. The upstream counts an answer when its
	// last byte is flushed; the worker charges it once it has read that byte. The two can only
	// disagree if the worker stops reading in between, which it does at its idle timeout, at
	// the job deadline, or when the client goes away (then it charges an estimate; so the load
	// generator never abandons a request). Hence:
	//   - idle: no answer is ever silent for soakIdleTimeout unless it hangs: answers start
	//     within soakLatency+soakJitter (25ms) and drip a byte every soakDrip (1ms);
	//   - deadline: the longest job waits in the queue, then makes three attempts: two hangs
	//     (soakIdleTimeout each) and a dripped answer (under 1 KiB at a byte a millisecond, so
	//     about 1s), ~4s in all. A retry goes at once to another of the soakChannels channels,
	//     and the worker never waits out a cool-down past the deadline, so soakJobTimeout leaves
	//     over 15s for the queue wait. The summary reports the longest job, queue included
	//     (under 4s at 50,000 requests).
	soakJobTimeout      = 20 * time.Second
	soakIdleTimeout     = 1500 * time.Millisecond
	soakIdleConnTimeout = 2 * time.Second // UPSTREAM_IDLE_CONN_TIMEOUT: pooled connections close soon after the load
	soakLatency         = 5 * time.Millisecond
	soakJitter          = 20 * time.Millisecond
	soakDrip            = time.Millisecond
	soakStreamChunks    = 2 // content pieces per streamed answer: keeps a dripped stream under 1 KiB

	// Allowed difference between a process at rest after the load and at rest after the
	// warm-up: the worker's pending Fetch and a scrape in progress come and go (goroutines),
	// and each process's Postgres pool keeps the connections it opened, up to DB_MAX_CONNS
	// (16, the default) in all (fds).
	soakGoroutineSlack = 4
	soakFDSlack        = 16 + 4
)

// ingressGoroutineBound is the stated bound on an ingress process's goroutines for
// INGRESS_MAX_CONNS=n (with INGRESS_MAX_WAITING ≤ n): net/http runs one goroutine per
// connection and one background-read goroutine per request being handled, and the listener
// accepts at most n connections; the ingress itself starts no goroutine per request (replies
// arrive on one NATS subscription), so the rest is a constant: NATS, Postgres, the channel
// refresher, the accept loop, the signal handler and the runtime.
func ingressGoroutineBound(n int) int { return 2*n + 64 }

// soakProc is what one scrape of a Sluice process's /metrics says.
type soakProc struct {
	Goroutines, FDs, RSS float64
}

// soakSample is one round of scrapes: both Sluice processes and the fake upstream's /stats.
type soakSample struct {
	at              time.Time
	load            bool // taken while the load ran
	ingress, worker soakProc
	upstreamConns   int64
	err             error // a scrape failed; the other fields are not to be trusted
}

// soakRecorder keeps the samples the sampler goroutine takes.
type soakRecorder struct {
	mu      sync.Mutex
	samples []soakSample
	load    atomic.Bool
}

func (r *soakRecorder) add(s soakSample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
}

// since returns the good samples taken at or after t.
func (r *soakRecorder) since(t time.Time) []soakSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []soakSample
	for _, s := range r.samples {
		if s.err == nil && !s.at.Before(t) {
			out = append(out, s)
		}
	}
	return out
}

// scrapeProc reads go_goroutines, process_open_fds and process_resident_memory_bytes from one
// scrape of base/metrics.
func scrapeProc(c *http.Client, base string) (soakProc, error) {
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return soakProc{}, err
	}
	defer resp.Body.Close()
	want := map[string]*float64{}
	var p soakProc
	want["go_goroutines"], want["process_open_fds"], want["process_resident_memory_bytes"] = &p.Goroutines, &p.FDs, &p.RSS
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if dst := want[name]; ok && dst != nil {
			if *dst, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
				return soakProc{}, fmt.Errorf("%s: %s: %w", base, name, err)
			}
			delete(want, name)
		}
	}
	if err := sc.Err(); err != nil {
		return soakProc{}, fmt.Errorf("%s: %w", base, err)
	}
	if len(want) > 0 {
		return soakProc{}, fmt.Errorf("%s: metrics %v missing", base, slices.Collect(maps.Keys(want)))
	}
	return p, nil
}

// upstreamStats reads the fake upstream's GET /stats.
func upstreamStats(c *http.Client, base string) (providertest.Stats, error) {
	var s providertest.Stats
	resp, err := c.Get(base + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// startFakeUpstream runs cmd/fakeupstream on a free loopback port with args and waits until
// its /stats answers (it has no /readyz, so startProc does not fit).
func startFakeUpstream(t *testing.T, args ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(binary(t, "fakeupstream"), append([]string{"-addr", addr, "-log-level", "error"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p := &proc{t: t, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{}), addr: addr}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("fakeupstream output:\n%s", p.out.String())
		}
	})
	// No keep-alive: the only connection to the fake upstream that is not the worker's is the
	// sampler's.
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	eventually(t, 30*time.Second, "the fake upstream to answer GET /stats", func() bool {
		select {
		case <-p.done:
			t.Fatalf("fakeupstream exited at start:\n%s", p.out.String())
		default:
		}
		_, err := upstreamStats(probe, "http://"+addr)
		return err == nil
	})
	return p
}

// soakTally records the answers clients got.
type soakTally struct {
	answers    map[string]int // per status (and error code, and whether streamed)
	succeeded  int            // complete, correct answers
	prompt     int64          // usage of those answers, from the fake upstream's formula
	completion int64
	problems   []string // malformed answers and requests that got no answer (first few)
	nProblems  int
}

func (t *soakTally) problem(format string, args ...any) {
	t.nProblems++
	if len(t.problems) < 5 {
		t.problems = append(t.problems, fmt.Sprintf(format, args...))
	}
}

// soakDrive sends requests from to to (inclusive) from soakClients clients, each with its own
// request loop, sharing the request numbers; odd ones stream (half of those asking for the
// usage chunk). A client never abandons a request: the client's timeout is far beyond the
// ingress's own answer at JOB_TIMEOUT + 2s. It returns what the clients got.
func soakDrive(client *http.Client, url, key string, from, to int) soakTally {
	var next atomic.Int64
	next.Store(int64(from - 1))
	tallies := make([]soakTally, soakClients)
	var clients sync.WaitGroup
	for c := range soakClients {
		tally := &tallies[c]
		tally.answers = map[string]int{}
		clients.Go(func() {
			for {
				i := int(next.Add(1))
				if i > to {
					return
				}
				tally.request(client, url, key, i)
			}
		})
	}
	clients.Wait()
	var all soakTally
	for i := range tallies {
		all.add(tallies[i])
	}
	return all
}

// request sends request i and records its answer.
func (t *soakTally) request(client *http.Client, url, key string, i int) {
	text := soakText(i)
	want, pt, ct := fakeAnswer(text)
	stream, wantUsage := i%2 == 1, i%4 == 1
	body := chatBody(soakModel, text)
	if stream {
		body["stream"] = true
		if wantUsage {
			body["stream_options"] = map[string]any{"include_usage": true}
		}
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.problem("request %d: %v", i, err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.problem("request %d: no answer: %v", i, err)
		return
	}
	label, ok, err := soakRead(resp, stream, wantUsage, want, pt, ct)
	resp.Body.Close()
	t.answers[label]++
	if err != nil {
		t.problem("request %d (stream=%v): %s: %v", i, stream, label, err)
	}
	if ok {
		t.succeeded++
		t.prompt += pt
		t.completion += ct
	}
}

// add adds o's counts to t's.
func (t *soakTally) add(o soakTally) {
	if t.answers == nil {
		t.answers = map[string]int{}
	}
	for k, v := range o.answers {
		t.answers[k] += v
	}
	t.succeeded += o.succeeded
	t.prompt += o.prompt
	t.completion += o.completion
	t.nProblems += o.nProblems
	t.problems = append(t.problems, o.problems...)
}

// soakText is request i's user message: 3 to 7 words, so usage varies between requests.
func soakText(i int) string {
	return strings.Join(strings.Fields("soak " + strconv.Itoa(i) + " the quick brown fox jumps")[:3+i%5], " ")
}

// soakAPIError checks that b is an API.md error body and returns its code (or type).
func soakAPIError(b []byte) (string, error) {
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
		return "", fmt.Errorf("not an API error: %.300s", b)
	}
	if e.Error.Code != nil && *e.Error.Code != "" {
		return *e.Error.Code, nil
	}
	return e.Error.Type, nil
}

// soakRead reads one whole answer and says what it was: its label for the per-status counts,
// whether it is a complete answer, and what is wrong with it if it is malformed. want, pt
// and ct are the content and usage the fake upstream gives for the request.
func soakRead(resp *http.Response, stream, wantUsage bool, want string, pt, ct int64) (label string, ok bool, err error) {
	label = strconv.Itoa(resp.StatusCode)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		if !stream || resp.StatusCode != http.StatusOK {
			return label + " stream", false, fmt.Errorf("an event stream with status %d for stream=%v", resp.StatusCode, stream)
		}
		return soakReadStream(resp.Body, wantUsage, want, pt, ct)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return label, false, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		var got chatResponse
		if err := json.Unmarshal(b, &got); err != nil || stream {
			return label, false, fmt.Errorf("a 200 JSON answer to stream=%v: %.300s", stream, b)
		}
		if len(got.Choices) != 1 || got.Choices[0].Message.Content != want ||
			got.Usage.PromptTokens != pt || got.Usage.CompletionTokens != ct {
			return label, false, fmt.Errorf("answer %.300s, want content %q and usage %d/%d", b, want, pt, ct)
		}
		return label, true, nil
	}
	if resp.StatusCode < 400 {
		return label, false, fmt.Errorf("status %d: %.300s", resp.StatusCode, b)
	}
	code, err := soakAPIError(b)
	return label + " " + code, false, err
}

// soakReadStream reads an event stream to its end. A complete stream is the expected
// content, then (if asked for) the usage chunk, then [DONE]; a failed one ends with an error
// event and no [DONE]. Anything else is malformed.
func soakReadStream(body io.Reader, wantUsage bool, want string, pt, ct int64) (string, bool, error) {
	sc := bufio.NewScanner(io.LimitReader(body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var content strings.Builder
	var usage *chatUsage
	var end string // "[DONE]" or the error event's label
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, isData := strings.CutPrefix(line, "data: ")
		switch {
		case end != "":
			return "200 stream", false, fmt.Errorf("data after the end of the stream (%s): %.200s", end, line)
		case !isData:
			return "200 stream", false, fmt.Errorf("not a data line: %.200s", line)
		case data == "[DONE]":
			end = data
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *chatUsage      `json:"usage"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return "200 stream", false, fmt.Errorf("event is not JSON: %.200s", data)
		}
		if ev.Error != nil {
			code, err := soakAPIError([]byte(data))
			if err != nil {
				return "200 stream", false, err
			}
			end = "200 stream, then error " + code
			continue
		}
		if ev.Usage != nil {
			usage = ev.Usage
		}
		for _, c := range ev.Choices {
			content.WriteString(c.Delta.Content)
		}
	}
	switch {
	case sc.Err() != nil:
		return "200 stream", false, fmt.Errorf("read stream: %w", sc.Err())
	case end == "":
		return "200 stream", false, errors.New("the stream ended with neither [DONE] nor an error event")
	case end != "[DONE]":
		return end, false, nil
	case content.String() != want:
		return "200 stream", false, fmt.Errorf("streamed content %q, want %q", content.String(), want)
	case wantUsage && (usage == nil || usage.PromptTokens != pt || usage.CompletionTokens != ct):
		return "200 stream", false, fmt.Errorf("usage chunk %+v, want %d/%d", usage, pt, ct)
	case !wantUsage && usage != nil:
		return "200 stream", false, errors.New("a usage chunk the client did not ask for")
	}
	return "200 stream", true, nil
}

type chatUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

// TestSoak is the fault storm: see the constants above for the set-up and why its numbers
// are what they are. It fails unless
//   - the worker's goroutines stay within workerGoroutineBound(WORKER_CONCURRENCY) and the
//     ingress's within ingressGoroutineBound(INGRESS_MAX_CONNS), at every sample;
//   - once the load stops, every process's goroutines and fds and the upstream connections
//     return to where they were before it, within JOB_TIMEOUT + UPSTREAM_IDLE_CONN_TIMEOUT
//     (plus slack), and RSS does not keep growing;
//   - every request got a well-formed HTTP answer, every job is terminal, and the ledger
//     equals the usage the fake upstream reports for its successful answers, exactly, with no
//     estimate and no job charged twice.
func TestSoak(t *testing.T) {
	t.Parallel()
	total := 3000
	if v := os.Getenv("SLUICE_SOAK_REQUESTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SLUICE_SOAK_REQUESTS=%q: want a positive integer", v)
		}
		total = n
	}
	ctx := context.Background()

	s := newStack(t, stackOpts{noWorker: true, jobTimeout: soakJobTimeout, idleTimeout: soakIdleTimeout})
	fake := startFakeUpstream(t, "-mix", soakMix, "-seed", "1", "-latency", soakLatency.String(),
		"-jitter", soakJitter.String(), "-drip-interval", soakDrip.String(), "-stream-chunks", strconv.Itoa(soakStreamChunks))
	upBase := "http://" + fake.addr

	ingAddr := freeAddr(t)
	ing := startProc(t, "ingress", ingAddr, map[string]string{
		"DATABASE_URL": s.db.URL, "NATS_URL": s.nats.URL, "SLUICE_ADMIN_TOKEN": adminToken,
		"SLUICE_ENCRYPTION_KEY": s.db.EncryptionKey, "INGRESS_ADDR": ingAddr,
		"INGRESS_MAX_CONNS": strconv.Itoa(soakMaxConns), "INGRESS_MAX_WAITING": strconv.Itoa(soakMaxConns),
		"JOB_TIMEOUT": soakJobTimeout.String(), "CHANNEL_REFRESH": "1s", "SHUTDOWN_GRACE": "5s", "LOG_LEVEL": "error",
	})
	// Configure through the ingress process's admin API; the in-process ingress newStack
	// started stays idle.
	s.base = "http://" + ingAddr
	for i := range soakChannels {
		s.channel(map[string]any{"name": fmt.Sprintf("soak-%d", i), "provider": "openai", "base_url": upBase + "/v1",
			"models": []string{soakModel}})
	}
	s.price(soakModel, 0.15, 0.60)
	key := s.newKey(nil)
	eventually(t, 10*time.Second, "the ingress to route "+soakModel, func() bool {
		resp, b := s.do(http.MethodGet, "/v1/models", key.Key, nil)
		return resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"`+soakModel+`"`))
	})
	s.http.CloseIdleConnections() // give its connection slot back
	// The worker starts last, so its first channel load already has every channel.
	wAddr := freeAddr(t)
	wenv := s.workerEnv(wAddr, soakConcurrency)
	wenv["UPSTREAM_IDLE_CONN_TIMEOUT"], wenv["LOG_LEVEL"] = soakIdleConnTimeout.String(), "error"
	work := startProc(t, "worker", wAddr, wenv)
	procs := map[string]*proc{"fakeupstream": fake, "ingress": ing, "worker": work}

	// The sampler: every 100ms, one scrape of each process, each over one kept-alive connection.
	scrapes := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1,
		DisableCompression: true}} // gzip would cost the processes more than the text does
	defer scrapes.CloseIdleConnections()
	rec := &soakRecorder{}
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			sm := soakSample{at: time.Now(), load: rec.load.Load()}
			var e1, e2, e3 error
			sm.ingress, e1 = scrapeProc(scrapes, "http://"+ingAddr)
			sm.worker, e2 = scrapeProc(scrapes, "http://"+wAddr)
			st, e3 := upstreamStats(scrapes, upBase)
			sm.upstreamConns, sm.err = st.OpenConns, errors.Join(e1, e2, e3)
			rec.add(sm)
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	})
	stopSampler := sync.OnceFunc(func() { close(stopSampling); sampler.Wait() })
	defer stopSampler()

	// The processes at rest: ten samples, of which the highest figures count.
	atRest := func() soakPeaks {
		from := time.Now()
		eventually(t, 30*time.Second, "ten samples at rest", func() bool { return len(rec.since(from)) >= 10 })
		return peaks(rec.since(from))
	}
	start := atRest()

	// A warm-up of soakWarmUp requests, then the baseline: at rest again, with what a process
	// keeps once it has served (Postgres connections, parked goroutines). The clients'
	// connections close at once, the upstream ones after UPSTREAM_IDLE_CONN_TIMEOUT.
	client := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		MaxConnsPerHost: soakClients, MaxIdleConnsPerHost: soakClients, DisableCompression: true}}
	defer client.CloseIdleConnections()
	ingURL, warm := "http://"+ingAddr+"/v1/chat/completions", soakWarmUp
	got := soakDrive(client, ingURL, key.Key, 1, warm)
	client.CloseIdleConnections()
	eventually(t, soakJobTimeout+soakIdleConnTimeout+30*time.Second, "the connections to close after the warm-up",
		func() bool {
			recent := rec.since(time.Now().Add(-150 * time.Millisecond))
			if len(recent) == 0 {
				return false
			}
			last := recent[len(recent)-1]
			return last.upstreamConns <= start.upstreamConns && last.ingress.Goroutines <= start.ingress.Goroutines+soakGoroutineSlack
		})
	base := atRest()

	// The load.
	rec.load.Store(true)
	began := time.Now()
	got.add(soakDrive(client, ingURL, key.Key, warm+1, warm+total))
	elapsed := time.Since(began)
	rec.load.Store(false)
	client.CloseIdleConnections() // the clients leave
	loadEnd := time.Now()

	for name, p := range procs {
		select {
		case <-p.done:
			t.Fatalf("%s exited during the load:\n%s", name, p.out.String())
		default:
		}
	}

	// The queue empty, then every job terminal. (A sync job's row is written with its outcome,
	// so "no unfinished row" says little until the queue is empty and the rows are counted.)
	js, err := jetstream.New(jobstest.Connect(t, s.nats.URL))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, soakJobTimeout+30*time.Second, "the job queue to drain", func() bool {
		st, err := js.Stream(ctx, jobs.StreamName)
		if err != nil {
			return false
		}
		cons, err := st.Consumer(ctx, jobs.ConsumerName)
		if err != nil {
			return false
		}
		ci, err := cons.Info(ctx)
		return err == nil && st.CachedInfo().State.Msgs == 0 && ci.NumPending == 0 && ci.NumAckPending == 0
	})
	eventually(t, 30*time.Second, "every job to be terminal", func() bool {
		var n int
		err := s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE finished_at IS NULL`).Scan(&n)
		return err == nil && n == 0
	})

	// Back to the baseline: goroutines, fds and upstream connections, at every sample for a
	// whole second.
	settle := soakJobTimeout + soakIdleConnTimeout + 30*time.Second
	var final soakPeaks
	var settled time.Duration
	atBase := func(p soakPeaks) bool {
		return p.upstreamConns <= base.upstreamConns &&
			p.worker.Goroutines <= base.worker.Goroutines+soakGoroutineSlack &&
			p.ingress.Goroutines <= base.ingress.Goroutines+soakGoroutineSlack &&
			p.worker.FDs <= base.worker.FDs+soakFDSlack && p.ingress.FDs <= base.ingress.FDs+soakFDSlack
	}
	for deadline := time.Now().Add(settle); ; time.Sleep(50 * time.Millisecond) {
		recent := rec.since(time.Now().Add(-time.Second))
		if len(recent) >= 8 {
			if final = peaks(recent); atBase(final) {
				settled = recent[0].at.Sub(loadEnd)
				break
			}
		}
		if time.Now().After(deadline) {
			settled = settle
			t.Errorf("not back to the baseline %s after the load stopped: upstream conns %d (baseline %d), "+
				"goroutines ingress %.0f worker %.0f (baseline %.0f, %.0f, slack %d), fds ingress %.0f worker %.0f "+
				"(baseline %.0f, %.0f, slack %d)", settle, final.upstreamConns, base.upstreamConns,
				final.ingress.Goroutines, final.worker.Goroutines, base.ingress.Goroutines, base.worker.Goroutines,
				soakGoroutineSlack, final.ingress.FDs, final.worker.FDs, base.ingress.FDs, base.worker.FDs, soakFDSlack)
			break
		}
	}
	stopSampler()

	all := rec.since(time.Time{})
	var during []soakSample
	for _, sm := range all {
		if sm.load {
			during = append(during, sm)
		}
	}
	if len(during) < 10 {
		t.Errorf("only %d good samples under load (%d scrapes failed): too few to hold the bounds to", len(during), rec.failed())
	}
	peak := peaks(all)
	for _, sm := range all {
		if g := int(sm.worker.Goroutines); g > workerGoroutineBound(soakConcurrency) {
			t.Errorf("worker goroutines = %d at %s, above the bound 5k+64 = %d", g,
				sm.at.Sub(began).Round(time.Millisecond), workerGoroutineBound(soakConcurrency))
			break
		}
	}
	for _, sm := range all {
		if g := int(sm.ingress.Goroutines); g > ingressGoroutineBound(soakMaxConns) {
			t.Errorf("ingress goroutines = %d at %s, above the bound 2×INGRESS_MAX_CONNS+64 = %d", g,
				sm.at.Sub(began).Round(time.Millisecond), ingressGoroutineBound(soakMaxConns))
			break
		}
	}
	if peak.upstreamConns > 2*soakConcurrency+1 {
		t.Errorf("upstream connections peaked at %d, above 2k+1 = %d (k open, k the fake has not seen close yet, the sampler's)",
			peak.upstreamConns, 2*soakConcurrency+1)
	}
	// RSS does not keep growing: the second half of the load peaks no higher than the first
	// half (plus a margin for the heap's ups and downs), and nothing grows once it has stopped.
	first, second := peaks(during[:len(during)/2]), peaks(during[len(during)/2:])
	for _, p := range []struct {
		name                  string
		first, second, finalV float64
	}{
		{"ingress", first.ingress.RSS, second.ingress.RSS, final.ingress.RSS},
		{"worker", first.worker.RSS, second.worker.RSS, final.worker.RSS},
	} {
		if p.second > p.first*1.25+16<<20 {
			t.Errorf("%s RSS kept growing under load: %.1f MiB in the first half, %.1f MiB in the second",
				p.name, p.first/(1<<20), p.second/(1<<20))
		}
		if p.finalV > max(p.first, p.second)+16<<20 {
			t.Errorf("%s RSS grew after the load: %.1f MiB, peak under load %.1f MiB",
				p.name, p.finalV/(1<<20), max(p.first, p.second)/(1<<20))
		}
	}

	// Every request got a well-formed answer.
	answered := 0
	for _, n := range got.answers {
		answered += n
	}
	if got.nProblems > 0 {
		t.Errorf("%d of %d requests got no answer or a malformed one; first ones:\n  %s", got.nProblems, warm+total,
			strings.Join(got.problems[:min(len(got.problems), 10)], "\n  "))
	}
	if answered != warm+total {
		t.Errorf("%d requests answered, want %d", answered, warm+total)
	}

	// The accounting, straight from Postgres and the fake upstream.
	up, err := upstreamStats(scrapes, upBase)
	if err != nil {
		t.Fatal(err)
	}
	var jobsN, succeeded, unfinished int
	var maxJob float64
	if err := s.db.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),
		count(*) FILTER (WHERE finished_at IS NULL),
		COALESCE(max(extract(epoch FROM finished_at - created_at)), 0)::float8 FROM jobs`).
		Scan(&jobsN, &succeeded, &unfinished, &maxJob); err != nil {
		t.Fatal(err)
	}
	var rows, distinct, estimated, mismatched int
	var ledgerPT, ledgerCT int64
	var spendOK bool
	if err := s.db.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE estimated),
		COALESCE(sum(prompt_tokens), 0), COALESCE(sum(completion_tokens), 0),
		key_spent($1) = COALESCE(sum(cost_usd), 0),
		(SELECT count(*) FROM usage_ledger l JOIN jobs j ON j.id = l.job_id WHERE j.status <> 'succeeded'
			OR j.prompt_tokens IS DISTINCT FROM l.prompt_tokens OR j.completion_tokens IS DISTINCT FROM l.completion_tokens
			OR j.cost_usd IS DISTINCT FROM l.cost_usd)
		FROM usage_ledger`, key.ID).
		Scan(&rows, &distinct, &estimated, &ledgerPT, &ledgerCT, &spendOK, &mismatched); err != nil {
		t.Fatal(err)
	}
	byStatus := map[string]int{}
	if r, err := s.db.Pool.Query(ctx, `SELECT status || ' ' || COALESCE(status_code::text, '-') ||
		COALESCE(' ' || (error->>'code'), ''), count(*) FROM jobs GROUP BY 1`); err == nil {
		for r.Next() {
			var k string
			var n int
			if r.Scan(&k, &n) == nil {
				byStatus[k] = n
			}
		}
		r.Close()
	}

	if jobsN != warm+total || unfinished != 0 {
		t.Errorf("%d jobs, %d unfinished; want %d jobs, all terminal", jobsN, unfinished, warm+total)
	}
	if ledgerPT != up.PromptTokens || ledgerCT != up.CompletionTokens {
		t.Errorf("ledger tokens %d prompt / %d completion, upstream reports %d / %d for its successful answers",
			ledgerPT, ledgerCT, up.PromptTokens, up.CompletionTokens)
	}
	if ledgerPT != got.prompt || ledgerCT != got.completion {
		t.Errorf("ledger tokens %d / %d, the clients' complete answers carry %d / %d", ledgerPT, ledgerCT, got.prompt, got.completion)
	}
	if rows != distinct || estimated != 0 || mismatched != 0 || !spendOK {
		t.Errorf("ledger: %d rows for %d jobs, %d estimated, %d unlike their job, spend = Σ cost: %v; "+
			"want one row per job, none estimated, all like their job, spend equal", rows, distinct, estimated, mismatched, spendOK)
	}
	if rows != succeeded || int64(succeeded) != up.Succeeded || succeeded != got.succeeded {
		t.Errorf("%d ledger rows, %d succeeded jobs, %d complete upstream answers, %d complete answers to clients; want all equal",
			rows, succeeded, up.Succeeded, got.succeeded)
	}

	// The summary.
	var sb strings.Builder
	fmt.Fprintf(&sb, "fault storm: %d requests (half streamed, after a warm-up of %d) from %d clients in %s = %.0f req/s; mix %s\n",
		total, warm, soakClients, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), soakMix)
	fmt.Fprintf(&sb, "  WORKER_CONCURRENCY=%d, INGRESS_MAX_CONNS=INGRESS_MAX_WAITING=%d, %d channels, JOB_TIMEOUT=%s, "+
		"UPSTREAM_IDLE_TIMEOUT=%s, UPSTREAM_IDLE_CONN_TIMEOUT=%s, drip %s/byte\n", soakConcurrency, soakMaxConns,
		soakChannels, soakJobTimeout, soakIdleTimeout, soakIdleConnTimeout, soakDrip)
	fmt.Fprintf(&sb, "answers:  %s\n", countsLine(got.answers))
	fmt.Fprintf(&sb, "jobs:     %s; longest job (queue wait included) %.1fs of JOB_TIMEOUT %s\n", countsLine(byStatus), maxJob, soakJobTimeout)
	modes := map[string]int{}
	var upTotal int64
	for m, n := range up.Requests {
		modes[string(m)] = int(n)
		upTotal += n
	}
	fmt.Fprintf(&sb, "upstream: %d requests: %s; %d complete answers, %d connections opened\n",
		upTotal, countsLine(modes), up.Succeeded, up.TotalConns)
	fmt.Fprintf(&sb, "ledger:   %d rows = %d succeeded jobs; prompt %d = upstream %d, completion %d = upstream %d; "+
		"%d estimated; spend = Σ cost: %v\n", rows, succeeded, ledgerPT, up.PromptTokens, ledgerCT, up.CompletionTokens, estimated, spendOK)
	fmt.Fprintf(&sb, "back to baseline (and there for a second) %s after the load stopped (allowed %s); %d samples, %d failed scrapes\n",
		settled.Round(100*time.Millisecond), settle, len(all), rec.failed())
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tgoroutines\t\t\t\t\tfds\t\t\t\tRSS MiB\t\t\t\t")
	fmt.Fprintln(tw, "process\tstart\tbaseline\tpeak\tfinal\tbound\tstart\tbaseline\tpeak\tfinal\tstart\tbaseline\tpeak\tfinal\t")
	mib := func(v float64) string { return fmt.Sprintf("%.1f", v/(1<<20)) }
	for _, p := range []struct {
		name                     string
		start, base, peak, final soakProc
		bound                    int
	}{
		{"ingress", start.ingress, base.ingress, peak.ingress, final.ingress, ingressGoroutineBound(soakMaxConns)},
		{"worker", start.worker, base.worker, peak.worker, final.worker, workerGoroutineBound(soakConcurrency)},
	} {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t\n", p.name,
			p.start.Goroutines, p.base.Goroutines, p.peak.Goroutines, p.final.Goroutines, p.bound,
			p.start.FDs, p.base.FDs, p.peak.FDs, p.final.FDs, mib(p.start.RSS), mib(p.base.RSS), mib(p.peak.RSS), mib(p.final.RSS))
	}
	fmt.Fprintf(tw, "upstream conns\t\t\t\t\t\t%d\t%d\t%d\t%d\t\t\t\t\t\n", start.upstreamConns, base.upstreamConns,
		peak.upstreamConns, final.upstreamConns)
	_ = tw.Flush()
	fmt.Fprintf(&sb, "RSS under load, MiB, peak in each tenth of the run:\n  ingress %s\n  worker  %s\n",
		rssTenths(during, func(s soakSample) float64 { return s.ingress.RSS }),
		rssTenths(during, func(s soakSample) float64 { return s.worker.RSS }))
	t.Log(sb.String())
}

// soakPeaks is the highest value of each figure over some samples.
type soakPeaks struct {
	ingress, worker soakProc
	upstreamConns   int64
}

func peaks(samples []soakSample) soakPeaks {
	var p soakPeaks
	hi := func(dst *soakProc, s soakProc) {
		dst.Goroutines, dst.FDs, dst.RSS = max(dst.Goroutines, s.Goroutines), max(dst.FDs, s.FDs), max(dst.RSS, s.RSS)
	}
	for _, s := range samples {
		hi(&p.ingress, s.ingress)
		hi(&p.worker, s.worker)
		p.upstreamConns = max(p.upstreamConns, s.upstreamConns)
	}
	return p
}

func (r *soakRecorder) failed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.samples {
		if s.err != nil {
			n++
		}
	}
	return n
}

// rssTenths renders the peak of rss over each tenth of samples.
func rssTenths(samples []soakSample, rss func(soakSample) float64) string {
	var parts []string
	for i := range 10 {
		var hi float64
		for _, s := range samples[i*len(samples)/10 : (i+1)*len(samples)/10] {
			hi = max(hi, rss(s))
		}
		parts = append(parts, fmt.Sprintf("%.1f", hi/(1<<20)))
	}
	return strings.Join(parts, " ")
}

// countsLine renders counts as "a 3, b 2", largest first.
func countsLine(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(m[b]-m[a], strings.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
