// Command sluicebench measures Sluice end to end on one machine: it builds and starts a
// private stack (NATS JetStream from cmd/devnats, two fake upstreams, Postgres from
// scripts/ensure-postgres.sh, the ingress and a worker, each a separate process on loopback)
// and drives it only through the public HTTP API and each process's /metrics, so it keeps
// working as Sluice's internals change. Every load point runs the same requests directly
// against the fake upstream (the ceiling) and through Sluice, side by side.
//
//	go run ./cmd/sluicebench                       # what `make bench` runs
//	go run ./cmd/sluicebench -sections sync -concurrency 1,64 -duration 5s -json out.json
//
// Sections: sync (non-stream chat completions: req/s, p50/p99, added latency), stream (time
// to first chunk), async (POST /v1/jobs submissions/s and drain rate), batch (a 50,000-line
// batch: upload, drain lines/s, RSS, sync p50/p99 at c=16 with and without it), slow (goroutines and
// RSS per in-flight job against a 30 s upstream), scale (sync load against 1, 2, 4 workers
// and 1, 2 ingresses sharing the one NATS and Postgres; not run by default: make bench-scale). It prints a markdown report on stdout,
// progress on stderr, and exits 1 if the stack could not be run (a missed target is not a
// failure: it is reported).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluicebench:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	duration, warmup time.Duration
	sections         map[string]bool
	concurrency      []int
	streamConc       []int
	workerConc       int
	streamChunks     int
	asyncJobs        int
	asyncConc        int
	asyncPaused      bool
	drainTimeout     time.Duration
	slowJobs         int
	slowLatency      time.Duration
	batchLines       int
	jsonPath         string
	repo             string
	goCmd            string
	dbName           string
	dbURL            string
	keep             bool
	pprof            bool
	h2c              bool
	extraEnv         map[string]string // -sluice-env
	timeout          time.Duration
	scaleWorkers     []int // -workers
	scaleIngresses   []int // -ingresses
	scaleConc        []int // -scale-concurrency
	natsCluster      int   // -nats-cluster: servers; 1 is cmd/devnats alone
	otlpSink         bool  // -otlp-sink: tracing on, exported to an in-process receiver
}

// allSections: the first five run by default.
var allSections = []string{"sync", "stream", "async", "batch", "slow", "scale"}

func parseConfig(args []string, out io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("sluicebench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time of each load point")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "warm-up before each load point (not measured)")
	sections := fs.String("sections", strings.Join(allSections[:5], ","), "sections to run: "+strings.Join(allSections, ","))
	conc := fs.String("concurrency", "1,64,256", "client concurrency levels of the sync section")
	streamConc := fs.String("stream-concurrency", "1,64", "client concurrency levels of the stream section")
	fs.IntVar(&c.workerConc, "worker-concurrency", 256, "WORKER_CONCURRENCY for the sync, stream and async sections")
	fs.IntVar(&c.streamChunks, "stream-chunks", 20, "content chunks per streamed answer from the fake upstream")
	fs.IntVar(&c.asyncJobs, "async-jobs", 20000, "jobs the async section submits")
	fs.IntVar(&c.asyncConc, "async-concurrency", 64, "clients submitting async jobs")
	fs.BoolVar(&c.asyncPaused, "async-worker-paused", false,
		"stop the worker while async jobs are submitted (submissions alone), then time the drain from its start")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 2*time.Minute, "longest wait for the async jobs to finish")
	fs.IntVar(&c.slowJobs, "slow-jobs", 1000, "requests held in flight by the slow section (also its WORKER_CONCURRENCY)")
	fs.DurationVar(&c.slowLatency, "slow-latency", 30*time.Second, "latency of the slow fake upstream")
	fs.IntVar(&c.batchLines, "batch-lines", 50000, "lines of the batch the batch section uploads and drains (1..50000)")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&c.repo, "repo", "", "the Sluice checkout (default: found from the working directory)")
	fs.StringVar(&c.goCmd, "go", "go", "the go command that builds the binaries")
	fs.StringVar(&c.dbName, "db", "sluice_bench", "bench database, emptied at start (its name must contain \"bench\")")
	fs.StringVar(&c.dbURL, "database-url", "", "Postgres URL of the bench database (default: from scripts/ensure-postgres.sh)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory (binaries, logs, NATS store)")
	fs.BoolVar(&c.h2c, "h2c", false, "HTTP/2 without TLS (h2c) from the load generator to the ingress (INGRESS_H2C=true) "+
		"and the fake upstream, and from the worker to upstreams (UPSTREAM_H2C=true), instead of HTTP/1.1")
	extraEnv := fs.String("sluice-env", "", "extra settings for the ingress and worker, as KEY=VALUE,KEY=VALUE (e.g. GOGC=400)")
	fs.BoolVar(&c.pprof, "pprof", false, "serve pprof from the ingress on 127.0.0.1:6061 and the worker on :6062")
	workers := fs.String("workers", "1,2,4", "scale section: numbers of worker processes")
	ingresses := fs.String("ingresses", "1,2", "scale section: numbers of ingress processes (clients spread over them)")
	scaleConc := fs.String("scale-concurrency", "64", "scale section: client concurrency levels of every shape (c=1 is added on 1×1)")
	fs.IntVar(&c.natsCluster, "nats-cluster", 1, "NATS servers: 1 runs cmd/devnats; 3 or 5 run a JetStream cluster of nats-server "+
		"processes (built from the module) with QUEUE_REPLICAS set to match")
	fs.BoolVar(&c.otlpSink, "otlp-sink", false, "tracing on: start an in-process OTLP/HTTP trace receiver and export every "+
		"trace of the ingress and worker to it (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER=always_on)")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Minute, "give up on the whole run after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for kv := range strings.SplitSeq(*extraEnv, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-sluice-env: %q is not KEY=VALUE", kv)
		}
		if c.extraEnv == nil {
			c.extraEnv = map[string]string{}
		}
		c.extraEnv[k] = v
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	c.sections = map[string]bool{}
	for s := range strings.SplitSeq(*sections, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(","+strings.Join(allSections, ",")+",", ","+s+",") {
			errs = append(errs, fmt.Errorf("-sections: unknown section %q", s))
		}
		c.sections[s] = true
	}
	var err error
	if c.concurrency, err = parseInts(*conc); err != nil {
		errs = append(errs, fmt.Errorf("-concurrency: %w", err))
	}
	if c.streamConc, err = parseInts(*streamConc); err != nil {
		errs = append(errs, fmt.Errorf("-stream-concurrency: %w", err))
	}
	for _, f := range []struct {
		name string
		in   string
		out  *[]int
		max  int
	}{{"-workers", *workers, &c.scaleWorkers, 16}, {"-ingresses", *ingresses, &c.scaleIngresses, 16},
		{"-scale-concurrency", *scaleConc, &c.scaleConc, 4096}} {
		v, err := parseInts(f.in)
		if err == nil && slices.ContainsFunc(v, func(n int) bool { return n > f.max }) {
			err = fmt.Errorf("%q: want at most %d", f.in, f.max)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
		*f.out = v
	}
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.natsCluster == 1 || c.natsCluster == 3 || c.natsCluster == 5, "-nats-cluster %d: want 1, 3 or 5", c.natsCluster)
	check(c.duration >= 100*time.Millisecond, "-duration %s: want at least 100ms", c.duration)
	check(c.warmup >= 0, "-warmup %s: want >= 0", c.warmup)
	check(c.workerConc >= 1, "-worker-concurrency %d: want >= 1", c.workerConc)
	check(c.streamChunks >= 1, "-stream-chunks %d: want >= 1", c.streamChunks)
	check(c.asyncJobs >= 1 && c.asyncJobs <= 100_000, "-async-jobs %d: want 1..100000 (QUEUE_MAX_JOBS)", c.asyncJobs)
	check(c.asyncConc >= 1, "-async-concurrency %d: want >= 1", c.asyncConc)
	check(c.slowJobs >= 1 && c.slowJobs <= 4096, "-slow-jobs %d: want 1..4096 (INGRESS_MAX_WAITING)", c.slowJobs)
	check(c.batchLines >= 1 && c.batchLines <= 50_000, "-batch-lines %d: want 1..50000", c.batchLines)
	check(c.slowLatency >= 5*time.Second, "-slow-latency %s: want at least 5s", c.slowLatency)
	return c, errors.Join(errs...)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("%q is not a concurrency in 1..4096", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// findRepo walks up from the working directory to the Sluice go.mod.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/sluicehq/sluice\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the Sluice checkout; pass -repo")
		}
		dir = parent
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s sluicebench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run builds and starts the stack, runs the chosen sections, stops the stack and prints the
// report.
func run(ctx context.Context, args []string, stdout io.Writer) (err error) {
	cfg, err := parseConfig(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if cfg.repo == "" {
		if cfg.repo, err = findRepo(); err != nil {
			return err
		}
	}
	var stopSink func() int64
	if cfg.otlpSink {
		stopSink = startOTLPSink(cfg)
		defer stopSink() // again after the count below: a no-op
	}
	rep := &report{Config: reportConfig{Duration: cfg.duration.String(), Warmup: cfg.warmup.String(),
		WorkerConcurrency: cfg.workerConc, NATSServers: cfg.natsCluster, H2C: cfg.h2c, ExtraEnv: cfg.extraEnv, StreamChunks: cfg.streamChunks, Started: time.Now().UTC().Format(time.RFC3339)}}
	rep.Machine = machine{CPUs: runtime.NumCPU(), CPUModel: cpuModel(), MemTotal: memTotal(), Kernel: kernel(),
		Go: runtime.Version(), LoadBefore: loadavg()}
	wholeBusy, wholeSteal, wholeTotal, _ := systemCPU()

	dir, err := os.MkdirTemp("", "sluicebench-")
	if err != nil {
		return err
	}
	defer func() {
		if cfg.keep || err != nil {
			logf("kept %s (binaries, logs)", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}()
	bin := filepath.Join(dir, "bin")
	logf("building %s into %s", strings.Join(binaries, ", "), bin)
	if err := build(ctx, cfg.goCmd, cfg.repo, bin); err != nil {
		return err
	}
	rep.Machine.NATS = natsVersion(ctx, cfg.goCmd, filepath.Join(bin, "devnats"))

	dbURL := cfg.dbURL
	if dbURL == "" {
		if dbURL, err = postgresURL(ctx, cfg.repo, cfg.dbName); err != nil {
			return err
		}
	}
	dbName, pgVersion, pgSettings, err := resetDatabase(ctx, dbURL)
	if err != nil {
		return err
	}
	rep.Machine.Postgres, rep.Machine.PGSettings = pgVersion, pgSettings
	s := &stack{cfg: cfg, bin: bin, dir: dir, dbURL: dbURL, dbName: dbName, encKey: randomKey(),
		admin: "bench-admin-" + randomToken(12), http: &http.Client{Timeout: 30 * time.Second,
			// Uncompressed scrapes: a gzip writer per scrape would add to the RSS being measured.
			Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}}}
	defer func() {
		logf("stopping the stack")
		if serr := s.stop(); serr != nil {
			logf("stop: %v", serr)
		}
	}()
	if err := s.startBase(ctx); err != nil {
		return err
	}
	first := cfg.workerConc
	if !cfg.sections["sync"] && !cfg.sections["stream"] && !cfg.sections["async"] && !cfg.sections["scale"] &&
		!cfg.sections["batch"] {
		first = cfg.slowJobs
	}
	if err := s.startSluice(ctx, first); err != nil {
		return err
	}
	if err := s.configure(ctx); err != nil {
		return err
	}
	logf("stack up: ingress %s, worker %s, fake upstream %s (0 ms) and %s (%s), %s", s.ingAddr, s.wrkAddr,
		s.fastAddr, s.slowAddr, cfg.slowLatency, redactURL(dbURL))

	if cfg.sections["sync"] {
		rep.Sync = s.loadSection(ctx, "sync", false, cfg.concurrency)
		if slices.Contains(cfg.concurrency, 1) && ctx.Err() == nil {
			logf("sync c=1: paired direct/Sluice requests for %s", cfg.duration/2)
			p := s.pairedRun(ctx, cfg.duration/2)
			rep.Paired = &p
		}
		if ctx.Err() == nil {
			c := s.cacheSection(ctx)
			rep.Cache = &c
		}
	}
	if cfg.sections["stream"] && ctx.Err() == nil {
		rep.Stream = s.loadSection(ctx, "stream", true, cfg.streamConc)
	}
	if cfg.sections["async"] && ctx.Err() == nil {
		a := s.asyncSection(ctx)
		rep.Async = &a
	}
	if cfg.sections["batch"] && ctx.Err() == nil {
		b := s.batchSection(ctx)
		rep.Batch = &b
	}
	if cfg.sections["slow"] && ctx.Err() == nil {
		sl, err := s.slowSection(ctx)
		if err != nil {
			return fmt.Errorf("slow section: %w", err)
		}
		rep.Slow = &sl
	}
	if cfg.sections["scale"] && ctx.Err() == nil {
		if rep.Scale, err = s.scaleSection(ctx); err != nil {
			return fmt.Errorf("scale section: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("run cut short: %w", err)
	}
	if stopSink != nil {
		if err := s.stopSluice(); err != nil { // their shutdown flushes the last spans
			logf("stop: %v", err)
		}
		n := stopSink()
		rep.Config.OTLPSpans = &n
	}
	rep.Machine.LoadAfter = loadavg()
	if busy, steal, total, err := systemCPU(); err == nil && total > wholeTotal {
		rep.MachineBusy = float64(busy-wholeBusy) / float64(total-wholeTotal) * float64(runtime.NumCPU())
		rep.MachineSteal = float64(steal-wholeSteal) / float64(total-wholeTotal) * float64(runtime.NumCPU())
	}
	rep.Finished = time.Now().UTC().Format(time.RFC3339)
	rep.evaluate()
	rep.markdown(stdout)
	if cfg.jsonPath != "" {
		if err := rep.writeJSON(cfg.jsonPath); err != nil {
			return err
		}
		logf("wrote %s", cfg.jsonPath)
	}
	return nil
}

// natsVersion reads the nats-server module version built into the devnats binary.
func natsVersion(ctx context.Context, goCmd, bin string) string {
	out, err := exec.CommandContext(ctx, goCmd, "version", "-m", bin).Output()
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "dep" && f[1] == "github.com/nats-io/nats-server/v2" {
			return f[2]
		}
	}
	return "?"
}

// redactURL drops a password from a URL for the log.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if at := strings.Index(u[i+3:], "@"); at >= 0 {
			cred := u[i+3 : i+3+at]
			if user, _, ok := strings.Cut(cred, ":"); ok {
				return u[:i+3] + user + ":***" + u[i+3+at:]
			}
		}
	}
	return u
}
