package e2e

import (
	"context"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/ingress"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
	"github.com/sluicehq/sluice/pkg/secret"
)

// pendingOutcomes is how many outcomes wait in the outcomes stream for a settler.
func pendingOutcomes(t *testing.T, s *stack) uint64 {
	t.Helper()
	nc := jobstest.Connect(t, s.nats.URL)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), jobs.OutcomeStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// exactLedger checks that each job in ids has exactly one ledger row and that the ledger
// holds exactly the usage the upstream reported, in as many rows as it answered: nothing
// lost, nothing charged twice.
func exactLedger(t *testing.T, s *stack, up *providertest.Upstream, ids []string) {
	t.Helper()
	var missing, rows int
	var tokens int64
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM unnest($1::text[]) AS i(id) WHERE (SELECT count(*) FROM usage_ledger l WHERE l.job_id = i.id) <> 1),
			(SELECT count(*) FROM usage_ledger),
			(SELECT COALESCE(sum(prompt_tokens + completion_tokens), 0) FROM usage_ledger WHERE NOT estimated)`, ids).
		Scan(&missing, &rows, &tokens); err != nil {
		t.Fatal(err)
	}
	st := up.Stats()
	if missing != 0 {
		t.Errorf("%d of %d answered jobs do not have exactly one ledger row", missing, len(ids))
	}
	if int64(rows) != st.Succeeded || tokens != st.PromptTokens+st.CompletionTokens {
		t.Errorf("ledger: %d rows, %d tokens; the upstream answered %d calls with %d tokens", rows, tokens,
			st.Succeeded, st.PromptTokens+st.CompletionTokens)
	}
	checkCharges(t, s, up)
}

// TestOutcomeSettledOnceAfterWorkerKill_Issue10: a worker answers sync calls while its
// Postgres is away — each outcome durable in the outcomes stream, none yet in Postgres — and
// is SIGKILLed before it could write any. Another worker settles every one of them, exactly
// once, and no upstream is called again.
func TestOutcomeSettledOnceAfterWorkerKill_Issue10(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true, ackWait: 3 * time.Second})
	up, srv := providertest.Start(t, providertest.Config{StreamChunks: 4})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 2, 4)
	key := s.newKey(nil)
	px := newPGProxy(t, s.db.URL)
	addr := freeAddr(t)
	env := s.workerEnv(addr, 4)
	env["DATABASE_URL"] = px.URL(t, s.db.URL)
	w1 := startProc(t, "worker", addr, env)
	c := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	if r := loadRequest(c, s.base, key.Key, "sync", 0); r.code != http.StatusOK { // the worker caches the key
		t.Fatalf("warm-up call: %d %s %v", r.code, r.body, r.err)
	}
	ids := []string{}
	s.settled()

	px.Down()
	const n = 12
	for i := range n {
		kind := "sync"
		if i%2 == 1 {
			kind = "stream"
		}
		r := loadRequest(c, s.base, key.Key, kind, i+1)
		r.kind = kind
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("%s call %d with the worker's Postgres away: %d %s %v", kind, i, r.code, r.body, r.err)
		}
		checkAnswer(t, r)
		ids = append(ids, r.hdr.Get("Sluice-Job-Id"))
	}
	if got := pendingOutcomes(t, s); got != n {
		t.Fatalf("%d outcomes wait in the stream, want the %d answered while Postgres was away", got, n)
	}
	var inPG int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM jobs WHERE id = ANY($1)`, ids).Scan(&inPG); err != nil {
		t.Fatal(err)
	}
	if inPG != 0 {
		t.Fatalf("%d of the answered jobs are in Postgres already; the worker could not reach it", inPG)
	}
	w1.signal(syscall.SIGKILL)
	<-w1.done
	px.Up()
	calls := up.Stats().Requests[providertest.ModeOK]

	addr2 := freeAddr(t)
	startProc(t, "worker", addr2, s.workerEnv(addr2, 4))
	s.settled()
	waitSucceeded(t, s, ids, 20*time.Second)
	exactLedger(t, s, up, ids)
	if again := up.Stats().Requests[providertest.ModeOK] - calls; again != 0 {
		t.Errorf("%d upstream calls after the kill; every job's outcome was recorded before it", again)
	}
}

// TestSyncAnsweredThroughPostgresOutage_Issue10: with Postgres away from the ingress and the
// worker for 20 s, sync calls of keys they have cached are answered all along (keys past
// their cache ttl are served stale), and once Postgres is back the ledger catches up
// exactly: one row per answered call, the upstream's usage, charged once.
func TestSyncAnsweredThroughPostgresOutage_Issue10(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true, ackWait: 3 * time.Second})
	up, srv := providertest.Start(t, providertest.Config{StreamChunks: 4})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 3)
	key := s.newKey(nil)
	px := newPGProxy(t, s.db.URL)
	dbURL := px.URL(t, s.db.URL)
	waddr := freeAddr(t)
	env := s.workerEnv(waddr, 8)
	env["DATABASE_URL"] = dbURL
	startProc(t, "worker", waddr, env)
	icfg := ingress.Config{Common: cli.Common{DatabaseURL: secret.Secret(dbURL), NATSURL: secret.Secret(s.nats.URL),
		EncryptionKey: secret.Secret(s.db.EncryptionKey), JobTimeout: 30 * time.Second, ChannelRefresh: time.Second,
		ShutdownGrace: 5 * time.Second, QueueMaxJobs: 10_000, DBMaxConns: 8},
		AdminToken: adminToken, MaxBodyBytes: 256 << 10, MaxWaiting: 256, MaxConns: 1024, KeyCacheTTL: time.Second}
	var iaddr string
	run(t, "ingress behind the proxy", func(ctx context.Context, ln net.Listener, ready func(string)) error {
		return ingress.Run(ctx, icfg, testLogger(t), ingress.Options{Listener: ln, Ready: ready})
	}, &iaddr)
	ibase := "http://" + iaddr
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(c.CloseIdleConnections)
	if r := loadRequest(c, ibase, key.Key, "sync", 0); r.code != http.StatusOK {
		t.Fatalf("warm-up call: %d %s %v", r.code, r.body, r.err)
	}

	px.Down()
	var lg loadLog
	var wg sync.WaitGroup
	stop := time.Now().Add(20 * time.Second)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				kind := "sync"
				if (g+i)%3 == 0 {
					kind = "stream"
				}
				lg.add(kind, loadRequest(c, ibase, key.Key, kind, 1000*g+i+1))
			}
		})
	}
	wg.Wait()
	px.Up()

	ids := []string{}
	for _, r := range lg.all() {
		if r.err != nil || r.code != http.StatusOK {
			t.Errorf("%s call during the outage: %d %s %v", r.kind, r.code, r.body, r.err)
			continue
		}
		checkAnswer(t, r)
		ids = append(ids, r.hdr.Get("Sluice-Job-Id"))
	}
	if len(ids) < 20 {
		t.Errorf("%d calls answered in 20 s of outage, want them to go on (at least 20)", len(ids))
	}
	s.settled()
	waitSucceeded(t, s, ids, 30*time.Second)
	exactLedger(t, s, up, ids)
	t.Logf("answered during the 20 s outage: %d calls", len(ids))
}
