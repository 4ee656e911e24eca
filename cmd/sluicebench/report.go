package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// report is everything one run measured; it is printed as markdown and optionally written
// as JSON.
type report struct {
	Config      reportConfig `json:"config"`
	Machine     machine      `json:"machine"`
	MachineBusy float64      `json:"machine_busy_cores"`
	// MachineSteal is CPU the hypervisor gave to other VMs over the run, in cores.
	MachineSteal float64      `json:"machine_steal_cores"`
	OtherAvg     float64      `json:"other_cores_avg"`
	OtherMax     float64      `json:"other_cores_max"`
	Sync         []syncPoint  `json:"sync,omitempty"`
	Paired       *paired      `json:"sync_paired_c1,omitempty"`
	Cache        *cacheResult `json:"cache_hit_c1,omitempty"`
	Stream       []syncPoint  `json:"stream,omitempty"`
	Async        *asyncResult `json:"async,omitempty"`
	Batch        *batchResult `json:"batch,omitempty"`
	Slow         *slowResult  `json:"slow,omitempty"`
	Scale        []scaleShape `json:"scale,omitempty"`
	Targets      []target     `json:"targets"`
	Finished     string       `json:"finished"`
}

type reportConfig struct {
	Duration          string            `json:"duration"`
	Warmup            string            `json:"warmup"`
	WorkerConcurrency int               `json:"worker_concurrency"`
	NATSServers       int               `json:"nats_servers"`
	H2C               bool              `json:"h2c"`
	ExtraEnv          map[string]string `json:"extra_env,omitempty"`
	StreamChunks      int               `json:"stream_chunks"`
	Started           string            `json:"started"`
	OTLPSpans         *int64            `json:"otlp_spans,omitempty"` // -otlp-sink: spans it received; nil: tracing off
}

// target is one goal and whether this run met it.
type target struct {
	Name     string  `json:"name"`
	Goal     string  `json:"goal"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Met      *bool   `json:"met"` // nil: not measured in this run
}

// The targets Sluice is held to.
const (
	targetSyncRate   = 4000   // req/s through Sluice at c=64, 0 ms upstream
	targetAddedP50   = 1.5    // ms added at p50 at c=1
	targetSubmitRate = 15000  // async submissions/s
	targetPerJobRSS  = 16384. // bytes of RSS per in-flight slow job, ingress + worker
)

func (r *report) evaluate() {
	var others []float64
	for _, p := range slices.Concat(r.Sync, r.Stream) {
		others = append(others, p.CPU.Other, p.DirectCPU.Other)
	}
	if r.Async != nil {
		others = append(others, r.Async.DrainCPU.Other)
	}
	for _, sh := range r.Scale {
		for _, p := range sh.Points {
			others = append(others, p.CPU.Other)
		}
	}
	for _, o := range others {
		r.OtherAvg += o / float64(len(others))
		r.OtherMax = max(r.OtherMax, o)
	}

	met := func(ok bool) *bool { return &ok }
	t := target{Name: "sync throughput", Goal: fmt.Sprintf("≥ %d req/s through Sluice at c=64 (0 ms upstream)", targetSyncRate),
		Measured: "not run"}
	if i := slices.IndexFunc(r.Sync, func(p syncPoint) bool { return p.Concurrency == 64 }); i >= 0 {
		v := r.Sync[i].Sluice.Rate
		t.Value, t.Measured, t.Met = v, fmt.Sprintf("%.0f req/s", v), met(v >= targetSyncRate)
	}
	r.Targets = append(r.Targets, t)

	t = target{Name: "added latency", Goal: fmt.Sprintf("p50 added ≤ %.1f ms at c=1", targetAddedP50), Measured: "not run"}
	if i := slices.IndexFunc(r.Sync, func(p syncPoint) bool { return p.Concurrency == 1 }); i >= 0 {
		v := r.Sync[i].AddedP50
		t.Measured = fmt.Sprintf("%.3f ms (Sluice p50 − direct p50)", v)
		if r.Paired != nil && r.Paired.Pairs > 0 {
			t.Measured += fmt.Sprintf("; paired median %.3f ms", r.Paired.MedianAdded)
		}
		t.Value, t.Met = v, met(v <= targetAddedP50)
	}
	r.Targets = append(r.Targets, t)

	t = target{Name: "async submissions", Goal: fmt.Sprintf("≥ %d POST /v1/jobs per s (c=64)", targetSubmitRate), Measured: "not run"}
	if r.Async != nil {
		v := r.Async.Submit.Rate
		t.Value, t.Measured, t.Met = v, fmt.Sprintf("%.0f /s", v), met(v >= targetSubmitRate && r.Async.Submit.Errors == 0)
		if r.Async.WorkerPaused {
			t.Measured += " (worker stopped while submitting)"
		}
	}
	r.Targets = append(r.Targets, t)

	t = target{Name: "memory per in-flight job", Goal: "≤ 16 KiB RSS per in-flight slow job (ingress + worker)", Measured: "not run"}
	if r.Slow != nil {
		v := r.Slow.PerJob.RSS
		t.Value, t.Measured = v, fmt.Sprintf("%.1f KiB", v/1024)
		t.Met = met(v <= targetPerJobRSS && r.Slow.Reached >= int64(r.Slow.Jobs))
	}
	r.Targets = append(r.Targets, t)
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func f0(v float64) string { return fmt.Sprintf("%.0f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }
func f3(v float64) string { return fmt.Sprintf("%.3f", v) }

// table writes a markdown table: the first column left-aligned, numbers right-aligned. A
// table whose header is all empty is a key/value list, left-aligned throughout.
func table(w io.Writer, head []string, rows [][]string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	kv := strings.TrimSpace(strings.Join(head, "")) == ""
	seps := make([]string, len(head))
	for i := range seps {
		seps[i] = "---"
		if i > 0 && !kv {
			seps[i] = "--:"
		}
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
}

func errCell(r loadResult) string {
	if r.Errors == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", r.Errors, strings.ReplaceAll(trim(r.FirstErr, 80), "|", "/"))
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (r *report) markdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "### Machine and run\n\n")
	table(w, []string{"", ""}, [][]string{
		{"CPU", fmt.Sprintf("%d × %s", m.CPUs, m.CPUModel)},
		{"memory / kernel", m.MemTotal + " / Linux " + m.Kernel},
		{"Go", m.Go},
		{"PostgreSQL", m.Postgres + " (" + m.PGSettings + ")"},
		{"NATS", natsNote(m.NATS, r.Config.NATSServers)},
		{"load average before / after", m.LoadBefore + " / " + m.LoadAfter},
		{"machine CPU busy over the run", fmt.Sprintf("%.2f of %d cores (hypervisor steal %.2f)", r.MachineBusy, m.CPUs,
			r.MachineSteal)},
		{"other processes during measured windows", fmt.Sprintf("%.2f cores on average, %.2f at most", r.OtherAvg, r.OtherMax)},
		{"settings", fmt.Sprintf("%s per point after %s warm-up; WORKER_CONCURRENCY=%d; LOG_LEVEL=warn; SHUTDOWN_GRACE=5s; "+
			"%sother settings default; %s", r.Config.Duration, r.Config.Warmup, r.Config.WorkerConcurrency,
			envNote(r.Config.ExtraEnv), protocolNote(r.Config.H2C))},
		{"tracing", tracingNote(r.Config)},
	})
	if r.OtherMax > 0.25 {
		fmt.Fprintf(w, "**Other work was running on the machine** (up to %.2f of %d cores during a measured window): "+
			"throughput and tail latency are lower than on an idle machine; CPU per request is the steadier figure.\n\n",
			r.OtherMax, m.CPUs)
	}

	if len(r.Sync) > 0 {
		fmt.Fprintf(w, "### Sync chat completions (non-stream, fake upstream 0 ms)\n\n")
		var rows [][]string
		for _, p := range r.Sync {
			rows = append(rows, []string{fmt.Sprint(p.Concurrency),
				f0(p.Direct.Rate), f3(p.Direct.Latency.P50), f3(p.Direct.Latency.P99),
				f0(p.Sluice.Rate), f3(p.Sluice.Latency.P50), f3(p.Sluice.Latency.P99),
				f3(p.AddedP50), errCell(p.Direct) + " / " + errCell(p.Sluice)})
		}
		table(w, []string{"c", "direct req/s", "direct p50 ms", "direct p99 ms", "Sluice req/s", "Sluice p50 ms",
			"Sluice p99 ms", "added p50 ms", "errors direct / Sluice"}, rows)
		if p := r.Paired; p != nil {
			fmt.Fprintf(w, "Paired at c=1 (direct and Sluice requests alternating on one client, %d pairs): "+
				"median per-request added latency **%.3f ms** (p90 %.3f ms); direct p50 %.3f ms, Sluice p50 %.3f ms; errors %d.\n\n",
				p.Pairs, p.MedianAdded, p.P90Added, p.DirectP50, p.SluiceP50, p.Errors)
		}
		r.cpuTable(w, r.Sync)
	}
	if len(r.Stream) > 0 {
		fmt.Fprintf(w, "### Streaming chat completions (%d chunks, fake upstream 0 ms)\n\n", r.Config.StreamChunks)
		var rows [][]string
		for _, p := range r.Stream {
			rows = append(rows, []string{fmt.Sprint(p.Concurrency),
				f0(p.Direct.Rate), f3(p.Direct.TTFB.P50), f3(p.Direct.TTFB.P99), f3(p.Direct.Latency.P50),
				f0(p.Sluice.Rate), f3(p.Sluice.TTFB.P50), f3(p.Sluice.TTFB.P99), f3(p.Sluice.Latency.P50),
				f3(p.AddedP50), errCell(p.Direct) + " / " + errCell(p.Sluice)})
		}
		table(w, []string{"c", "direct streams/s", "direct TTFB p50 ms", "p99", "direct total p50 ms",
			"Sluice streams/s", "Sluice TTFB p50 ms", "p99", "Sluice total p50 ms", "added TTFB p50 ms", "errors"}, rows)
		r.cpuTable(w, r.Stream)
	}
	if a := r.Async; a != nil {
		title, from, during := "then drain", "first submit", "the worker drains at the same time"
		if a.WorkerPaused {
			title, from, during = "worker stopped while submitting, then drain", "worker start", "worker stopped"
		}
		fmt.Fprintf(w, "### Async jobs (POST /v1/jobs, %s)\n\n", title)
		drain := "not drained within the timeout"
		if a.Drained {
			drain = f0(a.DrainRate)
		}
		table(w, []string{"jobs", "clients", "accepted", "submissions/s", "submit p50 ms", "submit p99 ms",
			"drain jobs/s (" + from + " → all terminal)", "drain s", "failed", "canceled", "submit errors"},
			[][]string{{fmt.Sprint(a.Jobs), fmt.Sprint(a.Concurrency), fmt.Sprint(a.Submit.OK), f0(a.Submit.Rate),
				f3(a.Submit.Latency.P50), f3(a.Submit.Latency.P99), drain, f2(a.DrainSecs), fmt.Sprint(a.Failed),
				fmt.Sprint(a.Canceled), errCell(a.Submit)}})
		fmt.Fprintf(w, "CPU (cores) while submitting (%s): %s. From %s to drained: %s.\n\n",
			during, cpuLine(a.SubmitCPU), from, cpuLine(a.DrainCPU))
	}
	if sl := r.Slow; sl != nil {
		fmt.Fprintf(w, "### In-flight slow jobs (%d sync requests held, fake upstream %s, WORKER_CONCURRENCY=%d)\n\n",
			sl.Jobs, sl.Latency, sl.Jobs)
		kib := func(b float64) string { return fmt.Sprintf("%.1f", b/1024) }
		mib := func(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }
		table(w, []string{"process", "goroutines idle", "steady", "after release", "per job",
			"RSS idle MiB", "steady MiB", "after release MiB", "RSS per job KiB"}, [][]string{
			{"ingress", f0(sl.Idle.Ingress.Goroutines), f0(sl.Steady.Ingress.Goroutines), f0(sl.After.Ingress.Goroutines),
				f2(sl.PerJob.IngressGoroutines), mib(sl.Idle.Ingress.RSS), mib(sl.Steady.Ingress.RSS), mib(sl.After.Ingress.RSS),
				kib(sl.PerJob.IngressRSS)},
			{"worker", f0(sl.Idle.Worker.Goroutines), f0(sl.Steady.Worker.Goroutines), f0(sl.After.Worker.Goroutines),
				f2(sl.PerJob.WorkerGoroutines), mib(sl.Idle.Worker.RSS), mib(sl.Steady.Worker.RSS), mib(sl.After.Worker.RSS),
				kib(sl.PerJob.WorkerRSS)},
			{"**combined**", f0(sl.Idle.Ingress.Goroutines + sl.Idle.Worker.Goroutines),
				f0(sl.Steady.Ingress.Goroutines + sl.Steady.Worker.Goroutines),
				f0(sl.After.Ingress.Goroutines + sl.After.Worker.Goroutines), "**" + f2(sl.PerJob.Goroutines) + "**",
				mib(sl.Idle.Ingress.RSS + sl.Idle.Worker.RSS), mib(sl.Steady.Ingress.RSS + sl.Steady.Worker.RSS),
				mib(sl.After.Ingress.RSS + sl.After.Worker.RSS), "**" + kib(sl.PerJob.RSS) + "**"},
		})
		if sl.PerJob.Stack > 0 || sl.PerJob.Heap > 0 {
			fmt.Fprintf(w, "Growth per job, both processes, by the Go runtime's own accounting: goroutine stacks "+
				"(go_memstats_stack_inuse_bytes) %.1f KiB, heap in use (go_memstats_heap_inuse_bytes) %.1f KiB. "+
				"These need not add up to the RSS growth: memory the process already had resident at idle is reused, "+
				"and GC headroom comes on top.\n\n", sl.PerJob.Stack/1024, sl.PerJob.Heap/1024)
		}
		outcomes := make([]string, 0, len(sl.Outcomes))
		for k, v := range sl.Outcomes {
			outcomes = append(outcomes, fmt.Sprintf("%s: %d", k, v))
		}
		slices.Sort(outcomes)
		ret := fmt.Sprintf("did **not** return to within 8 of idle in %.0f s: ingress %+.0f, worker %+.0f above idle "+
			"(%.2f and %.2f per job held at the peak)", releaseWait.Seconds(),
			sl.After.Ingress.Goroutines-sl.Idle.Ingress.Goroutines, sl.After.Worker.Goroutines-sl.Idle.Worker.Goroutines,
			(sl.After.Ingress.Goroutines-sl.Idle.Ingress.Goroutines)/float64(sl.Jobs),
			(sl.After.Worker.Goroutines-sl.Idle.Worker.Goroutines)/float64(sl.Jobs))
		if sl.Returned {
			ret = fmt.Sprintf("returned to within 8 of idle %.1f s after release", sl.AfterSecs)
		}
		fmt.Fprintf(w, "%d of %d requests reached the upstream %.1f s after the first was sent; samples are medians of 5 scrapes. "+
			"Clients then cancelled (%s); goroutines %s. RSS after release is what the Go runtime still holds.\n\n",
			sl.Reached, sl.Jobs, sl.RampSecs, strings.Join(outcomes, ", "), ret)
		if sl.SampleError != "" {
			fmt.Fprintf(w, "Sampling error at steady state: %s\n\n", sl.SampleError)
		}
	}
	r.batchMarkdown(w)
	r.scaleMarkdown(w)
	if !slices.ContainsFunc(r.Targets, func(t target) bool { return t.Met != nil }) {
		return // none of the targeted sections ran (e.g. -sections scale)
	}
	fmt.Fprintf(w, "### Targets\n\n")
	var rows [][]string
	for _, t := range r.Targets {
		verdict := "not measured"
		if t.Met != nil {
			verdict = "**missed**"
			if *t.Met {
				verdict = "met"
			}
		}
		rows = append(rows, []string{t.Name, t.Goal, t.Measured, verdict})
	}
	table(w, []string{"target", "goal", "measured", ""}, rows)
}

// cpuTable shows where the CPU went during each Sluice point's measured window: cores, and
// CPU time per request.
func (r *report) cpuTable(w io.Writer, pts []syncPoint) {
	var rows [][]string
	names := []string{"ingress", "worker", "nats", "postgres", "fakeupstream", "loadgen"}
	for _, p := range pts {
		c := p.CPU
		row := []string{fmt.Sprint(p.Concurrency)}
		for _, n := range names {
			row = append(row, fmt.Sprintf("%.2f (%s)", c.Cores[n], perReq(c.Cores[n], p.Sluice.Rate)))
		}
		sluice := c.Cores["ingress"] + c.Cores["worker"] + c.Cores["nats"] + c.Cores["postgres"]
		row = append(row, fmt.Sprintf("%.2f (%s)", sluice, perReq(sluice, p.Sluice.Rate)), f2(c.Other), f2(c.Steal),
			f2(c.Machine))
		rows = append(rows, row)
	}
	fmt.Fprintf(w, "CPU during the Sluice runs: cores busy (of %d) and, in parentheses, µs of CPU per request, from "+
		"/proc/<pid>/stat; postgres is the bench database's backends, other is everything else on the machine, steal is "+
		"CPU the hypervisor gave to other VMs:\n\n", r.Machine.CPUs)
	table(w, []string{"c", "ingress", "worker", "nats", "postgres", "fake upstream", "load generator",
		"Sluice total (ingress+worker+nats+postgres)", "other", "steal", "machine busy"}, rows)
}

// perReq is cores/rate in µs of CPU per request.
func perReq(cores, rate float64) string {
	if rate <= 0 {
		return "-"
	}
	return f0(cores / rate * 1e6)
}

func cpuLine(c cpuShare) string {
	return fmt.Sprintf("ingress %.2f, worker %.2f, nats %.2f, postgres %.2f, load generator %.2f, other %.2f, steal %.2f",
		c.Cores["ingress"], c.Cores["worker"], c.Cores["nats"], c.Cores["postgres"], c.Cores["loadgen"], c.Other, c.Steal)
}

func protocolNote(h2c bool) string {
	if h2c {
		return "HTTP/2 without TLS (h2c) from clients to the ingress (INGRESS_H2C=true) and fake upstream, and from the " +
			"worker to upstreams (UPSTREAM_H2C=true)"
	}
	return "HTTP/1.1 everywhere"
}

// envNote lists the -sluice-env settings, sorted, each followed by "; ".
func envNote(env map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&b, "%s=%s; ", k, env[k])
	}
	return b.String()
}

func natsNote(version string, servers int) string {
	if servers > 1 {
		return fmt.Sprintf("nats-server %s, a JetStream cluster of %d processes, file storage, QUEUE_REPLICAS=%d", version,
			servers, servers)
	}
	return "nats-server " + version + " (cmd/devnats, JetStream file storage)"
}
