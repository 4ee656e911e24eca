package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// binaries are the commands the stack runs, built from this checkout.
var binaries = []string{"ingress", "worker", "fakeupstream", "devnats"}

// build compiles the binaries into dir with the go command of the checkout.
func build(ctx context.Context, goCmd, repo, dir string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// postgresURL asks scripts/ensure-postgres.sh for a URL to database db (it finds or starts
// a server and creates the database).
func postgresURL(ctx context.Context, repo, db string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "scripts", "ensure-postgres.sh"), db)
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/ensure-postgres.sh %s: %w", db, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// resetDatabase empties the public schema of the bench database and returns the server's
// version and durability settings.
func resetDatabase(ctx context.Context, url string) (db, version, settings string, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", "", "", fmt.Errorf("connect to the bench database: %w", err)
	}
	defer conn.Close(ctx)
	db = conn.Config().Database
	if !strings.Contains(db, "bench") {
		return "", "", "", fmt.Errorf("refusing to reset database %q: its name must contain \"bench\"", db)
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public`); err != nil {
		return "", "", "", fmt.Errorf("reset %s: %w", db, err)
	}
	var sc, fs string
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('synchronous_commit'),
		current_setting('fsync')`).Scan(&version, &sc, &fs); err != nil {
		return "", "", "", err
	}
	return db, version, fmt.Sprintf("synchronous_commit=%s, fsync=%s", sc, fs), nil
}

// randomToken returns n random bytes as hex.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// stack is the running system under test: one NATS, two fake upstreams, one ingress and one
// worker, all separate processes on loopback.
type stack struct {
	cfg      *config
	bin, dir string // binaries; logs and the NATS store
	dbURL    string
	dbName   string
	encKey   string
	admin    string
	natsURL  string
	http     *http.Client // for set-up calls and scrapes

	mu                         sync.Mutex
	nats, fast, slow, ing, wrk *proc
	natsPeers                  []*proc // the other servers of a -nats-cluster
	fastAddr, slowAddr         string
	ingAddr, wrkAddr           string

	key, asyncKey string
}

func (s *stack) env() map[string]string {
	env := map[string]string{"DATABASE_URL": s.dbURL, "NATS_URL": s.natsURL, "SLUICE_ENCRYPTION_KEY": s.encKey,
		"LOG_LEVEL": "warn", "SHUTDOWN_GRACE": "5s"}
	if s.cfg.natsCluster > 1 {
		env["QUEUE_REPLICAS"] = fmt.Sprint(s.cfg.natsCluster)
	}
	maps.Copy(env, s.cfg.extraEnv)
	return env
}

// startBase starts what the whole run shares: NATS, the two fake upstreams, and migrations.
func (s *stack) startBase(ctx context.Context) error {
	var err error
	if s.cfg.natsCluster > 1 {
		err = s.startNATSCluster(ctx, s.cfg.natsCluster)
	} else {
		err = s.startDevNATS(ctx)
	}
	if err != nil {
		return err
	}
	if s.fastAddr, err = freeAddr(); err != nil {
		return err
	}
	s.fast, err = startProc("fakeupstream-fast", filepath.Join(s.bin, "fakeupstream"), s.dir, nil,
		"-addr", s.fastAddr, "-log-level", "warn", "-stream-chunks", fmt.Sprint(s.cfg.streamChunks))
	if err != nil {
		return err
	}
	if err := s.fast.waitReady(ctx, 30*time.Second, probeHTTP(s.http, "http://"+s.fastAddr+"/stats")); err != nil {
		return err
	}
	if s.slowAddr, err = freeAddr(); err != nil {
		return err
	}
	s.slow, err = startProc("fakeupstream-slow", filepath.Join(s.bin, "fakeupstream"), s.dir, nil,
		"-addr", s.slowAddr, "-log-level", "warn", "-latency", s.cfg.slowLatency.String())
	if err != nil {
		return err
	}
	if err := s.slow.waitReady(ctx, 30*time.Second, probeHTTP(s.http, "http://"+s.slowAddr+"/stats")); err != nil {
		return err
	}
	mig := exec.CommandContext(ctx, filepath.Join(s.bin, "worker"), "migrate")
	mig.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + s.dbURL}
	if out, err := mig.CombinedOutput(); err != nil {
		return fmt.Errorf("worker migrate: %w\n%s", err, out)
	}
	return nil
}

// startDevNATS starts the one NATS server of cmd/devnats.
func (s *stack) startDevNATS(ctx context.Context) error {
	natsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	s.natsURL = "nats://" + natsAddr
	if s.nats, err = startProc("devnats", filepath.Join(s.bin, "devnats"), s.dir, nil,
		"-addr", natsAddr, "-store", filepath.Join(s.dir, "nats"), "-quiet"); err != nil {
		return err
	}
	return s.nats.waitReady(ctx, 30*time.Second, probeTCP(natsAddr))
}

// startSluice (re)starts the ingress and a worker with the given WORKER_CONCURRENCY.
func (s *stack) startSluice(ctx context.Context, workerConc int) error {
	if err := s.stopSluice(); err != nil {
		return err
	}
	var err error
	if s.ingAddr, err = freeAddr(); err != nil {
		return err
	}
	env := s.env()
	env["INGRESS_ADDR"], env["SLUICE_ADMIN_TOKEN"] = s.ingAddr, s.admin
	env["INGRESS_MAX_CONNS_PER_IP"] = "0" // every client of the load is on this one address
	if s.cfg.pprof {
		env["PPROF_ADDR"] = "127.0.0.1:6061"
	}
	if s.cfg.h2c {
		env["INGRESS_H2C"] = "true"
	}
	ing, err := startProc("ingress", filepath.Join(s.bin, "ingress"), s.dir, env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ing = ing
	s.mu.Unlock()
	if err := ing.waitReady(ctx, 30*time.Second, probeHTTP(s.http, "http://"+s.ingAddr+"/readyz")); err != nil {
		return err
	}
	return s.startWorker(ctx, workerConc)
}

// startWorker starts a worker with the given WORKER_CONCURRENCY; none may be running.
func (s *stack) startWorker(ctx context.Context, workerConc int) error {
	var err error
	if s.wrkAddr, err = freeAddr(); err != nil {
		return err
	}
	env := s.env()
	env["WORKER_ADDR"], env["WORKER_CONCURRENCY"] = s.wrkAddr, fmt.Sprint(workerConc)
	// The bench drives one API key: let it use every slot, as a single-tenant deployment
	// would (older builds ignore the variable).
	env["WORKER_KEY_SHARE"] = "1"
	if s.cfg.h2c {
		env["UPSTREAM_H2C"] = "true"
	}
	if s.cfg.pprof {
		env["PPROF_ADDR"] = "127.0.0.1:6062"
	}
	wrk, err := startProc("worker", filepath.Join(s.bin, "worker"), s.dir, env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.wrk = wrk
	s.mu.Unlock()
	return wrk.waitReady(ctx, 30*time.Second, probeHTTP(s.http, "http://"+s.wrkAddr+"/readyz"))
}

// stopWorker stops the worker and leaves the ingress running.
func (s *stack) stopWorker() error {
	s.mu.Lock()
	wrk := s.wrk
	s.wrk = nil
	s.mu.Unlock()
	if wrk == nil {
		return nil
	}
	return wrk.stop(20 * time.Second)
}

// stopSluice stops the worker, then the ingress.
func (s *stack) stopSluice() error {
	s.mu.Lock()
	wrk, ing := s.wrk, s.ing
	s.wrk, s.ing = nil, nil
	s.mu.Unlock()
	var errs []error
	if wrk != nil {
		errs = append(errs, wrk.stop(20*time.Second))
	}
	if ing != nil {
		errs = append(errs, ing.stop(20*time.Second))
	}
	return errors.Join(errs...)
}

// stop stops every process, newest first.
func (s *stack) stop() error {
	errs := []error{s.stopSluice()}
	for _, p := range append([]*proc{s.slow, s.fast, s.nats}, s.natsPeers...) {
		if p != nil {
			errs = append(errs, p.stop(20*time.Second))
		}
	}
	return errors.Join(errs...)
}

// pids names the running processes for the CPU meter.
func (s *stack) pids() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for name, p := range map[string]*proc{"nats": s.nats, "fakeupstream": s.fast, "fakeupstream-slow": s.slow,
		"ingress": s.ing, "worker": s.wrk} {
		if p != nil {
			m[name] = p.pid()
		}
	}
	for i, p := range s.natsPeers {
		m[fmt.Sprintf("nats/%d", i+2)] = p.pid()
	}
	return m
}

// Model names the bench configures: one served by each fake upstream.
const (
	fastModel = "bench-model"
	slowModel = "bench-slow"
)

// configure creates, through the admin API, a channel to each fake upstream, their prices,
// and two API keys (sync traffic, async traffic), then waits until a request goes through.
func (s *stack) configure(ctx context.Context) error {
	base := "http://" + s.ingAddr
	for _, ch := range []struct{ name, addr, model string }{
		{"bench-fast", s.fastAddr, fastModel}, {"bench-slow", s.slowAddr, slowModel}} {
		if err := s.adminCall(ctx, http.MethodPost, base+"/admin/v1/channels", map[string]any{
			"name": ch.name, "provider": "openai", "base_url": "http://" + ch.addr + "/v1", "api_key": "sk-bench",
			"models": []string{ch.model}}, nil); err != nil {
			return err
		}
		if err := s.adminCall(ctx, http.MethodPut, base+"/admin/v1/prices/"+ch.model,
			map[string]any{"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.60}, nil); err != nil {
			return err
		}
	}
	var k struct {
		Key string `json:"key"`
	}
	if err := s.adminCall(ctx, http.MethodPost, base+"/admin/v1/keys", map[string]any{"name": "bench"}, &k); err != nil {
		return err
	}
	s.key = k.Key
	if err := s.adminCall(ctx, http.MethodPost, base+"/admin/v1/keys", map[string]any{"name": "bench-async"}, &k); err != nil {
		return err
	}
	s.asyncKey = k.Key
	return s.waitRoutes(ctx)
}

// waitRoutes waits until a chat completion through Sluice succeeds.
func (s *stack) waitRoutes(ctx context.Context) error {
	body := chatBody(fastModel, false, false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.ingAddr+"/v1/chat/completions",
			bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
		status, msg := 0, ""
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			httpbody.Close(resp)
			status, msg = resp.StatusCode, string(b)
		} else {
			msg = err.Error()
		}
		if status == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no successful request through Sluice after 30s: %d %s", status, msg)
		}
		if !wait(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func (s *stack) adminCall(ctx context.Context, method, url string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer httpbody.Close(resp)
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, rb)
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

// prompt is the user message of every bench request: 30 words, so the fake upstream's echo
// answer is small and a streamed answer has 20 content chunks (one per word or more).
const prompt = "Sluice bench: the quick brown fox jumps over the lazy dog while seven wizards quietly " +
	"judge boxing matches near the old stone bridge under a pale blue autumn sky today"

// chatBody is a chat completion request. upstream adds what Sluice itself asks of the
// upstream for a stream (the usage chunk), so a direct call does the same upstream work.
func chatBody(model string, stream, upstream bool) []byte {
	m := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": prompt}}}
	if stream {
		m["stream"] = true
		if upstream {
			m["stream_options"] = map[string]bool{"include_usage": true}
		}
	}
	b, _ := json.Marshal(m)
	return b
}
