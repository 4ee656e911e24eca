// Command fakeupstream serves a fault-injecting fake LLM upstream
// (providertest.Upstream) for `make run`, load tests and manual poking.
//
// Every flag can also be set in the environment as FAKE_UPSTREAM_<FLAG>, with
// dashes as underscores (FAKE_UPSTREAM_RETRY_AFTER); a flag beats its variable.
//
//	fakeupstream -addr 127.0.0.1:8089 -mix ok=80,429=10,hang=10 -seed 1 -latency 50ms
//
// GET /stats returns the counters and POST /stats/reset zeroes them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// shutdownGrace bounds how long in-flight answers may take to finish on shutdown.
const shutdownGrace = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeupstream:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	addr     string
	logLevel slog.Level
	upstream providertest.Config
}

// parseConfig reads flags, falling back to FAKE_UPSTREAM_* variables from
// getenv. It reports every bad variable at once.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("fakeupstream", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8089", "listen address")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level; debug logs every request")
	fs.StringVar(&c.upstream.Mix, "mix", "", `weighted modes, e.g. "ok=60,429=10,503=8,hang=2" (empty: always ok)`)
	fs.Int64Var(&c.upstream.Seed, "seed", 0, "seed for the mix")
	fs.DurationVar(&c.upstream.Latency, "latency", 0, "base latency before every answer")
	fs.DurationVar(&c.upstream.Jitter, "jitter", 0, "uniform random extra latency in [0, jitter)")
	fs.IntVar(&c.upstream.RetryAfter, "retry-after", 0, "Retry-After seconds for 429 and 503 (0: 1)")
	fs.DurationVar(&c.upstream.DripInterval, "drip-interval", 0, "pause between bytes in drip mode (0: 300ms)")
	fs.IntVar(&c.upstream.BigBytes, "big-bytes", 0, "content size in big mode (0: 5 MiB)")
	fs.IntVar(&c.upstream.StreamChunks, "stream-chunks", 0, "content chunks per stream (0: one per word)")

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := "FAKE_UPSTREAM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return config{}, err
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, nil
}

// run serves the fake upstream until ctx is done, then cuts hanging and
// dripping answers and gives the rest shutdownGrace to finish.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseConfig(args, os.Getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h printed the usage
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.logLevel})).
		With("component", "fakeupstream")
	up, err := providertest.New(cfg.upstream)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	// HTTP/1 and, for clients that ask for it by prior knowledge, HTTP/2 without TLS (h2c).
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols:         protocols,
		Handler:           logRequests(log, up),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         up.ConnState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.InfoContext(ctx, "listening", "addr", ln.Addr().String(), "mix", cfg.upstream.Mix, "seed", cfg.upstream.Seed,
		"latency", cfg.upstream.Latency, "jitter", cfg.upstream.Jitter)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }() // owned here: both ways out below wait for errc

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	up.Close() // hang and drip would otherwise hold Shutdown for the whole grace period
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = errors.Join(err, srv.Close())
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) { // Serve has returned
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s := up.Stats()
	log.InfoContext(ctx, "stopped", "succeeded", s.Succeeded, "prompt_tokens", s.PromptTokens,
		"completion_tokens", s.CompletionTokens, "total_conns", s.TotalConns)
	return nil
}

// logRequests logs each request at debug level: never bodies, only sizes.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		log.DebugContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path,
			"mode", rec.Header().Get("X-Fake-Mode"), "status", rec.status, "bytes", rec.bytes,
			"elapsed", time.Since(start))
	})
}

// recorder notes the status and size of a response. Unwrap lets
// http.ResponseController reach the underlying Flush and Hijack.
type recorder struct {
	http.ResponseWriter
	status int // 0 if nothing was written (reset, hang, or a cut before headers)
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
