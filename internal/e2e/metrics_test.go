package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// scrape reads a Prometheus text endpoint: each family's type by name, and each sample's
// value by its line's series (name{labels}, as exported).
func scrape(t *testing.T, base string) (types map[string]string, samples map[string]float64) {
	t.Helper()
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", base, err)
	}
	defer resp.Body.Close()
	types, samples = map[string]string{}, map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			types[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: %q: %v", base, line, err)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", base, err)
	}
	return types, samples
}

// seriesNames are the names a query may select for families of these types: a histogram's
// _bucket, _sum and _count series, a summary's _sum and _count beside its own.
func seriesNames(types map[string]string) map[string]bool {
	out := map[string]bool{}
	for name, typ := range types {
		switch typ {
		case "histogram":
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case "summary":
			out[name], out[name+"_sum"], out[name+"_count"] = true, true, true
		default:
			out[name] = true
		}
	}
	return out
}

// TestDashboardMetricsExported_Issue14_7 runs a real ingress and worker (Postgres, embedded
// NATS, fake upstreams: one that answers, one that fails every call), sends successful,
// streamed, async (with a webhook), failing and unknown-model requests so the labelled
// metrics have series, then scrapes both processes and checks that
//   - every metric each dashboard panel and alert rule queries is exported by one of them;
//   - every sluice_ metric they export is on the dashboard (the per-key ones aside) and
//     every metric they export is documented in the README;
//   - the new metrics read right: tokens and cost by model equal the ledger (and per key,
//     METRICS_PER_KEY being on), no series for a model no channel serves, attempts by channel
//     and outcome, the failing channel's circuit not closed and the other's closed, the
//     webhook delivery counted, and the goroutine bounds.
func TestDashboardMetricsExported_Issue14_7(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true})
	s.wcfg.MetricsPerKey = true
	s.ops, s.stopW = s.startWorker()
	_, okSrv := providertest.Start(t, providertest.Config{})
	_, badSrv := providertest.Start(t, providertest.Config{Mix: "500=1"})
	okCh := s.channel(map[string]any{"name": "works", "provider": "openai", "base_url": okSrv.URL + "/v1", "models": []string{"m"}})
	badCh := s.channel(map[string]any{"name": "fails", "provider": "openai", "base_url": badSrv.URL + "/v1", "models": []string{"flaky"}})
	s.price("m", 1.5, 4)
	k := s.newKey(nil)
	hook, hookCalls := hookReceiver(t, func(int) int { return http.StatusOK })

	for i := range 3 {
		if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", fmt.Sprintf("hello %d", i))); resp.StatusCode != http.StatusOK {
			t.Fatalf("sync %d: %d %s", i, resp.StatusCode, b)
		}
	}
	stream := chatBody("m", "a streamed answer")
	stream["stream"] = true
	if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, stream); resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	if resp, b := s.do(http.MethodPost, "/v1/jobs", k.Key, map[string]any{"endpoint": "/v1/chat/completions",
		"body": chatBody("m", "call me back"), "webhook": map[string]string{"url": hook.URL + "/hook"}}); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("async: %d %s", resp.StatusCode, b)
	}
	if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("flaky", "fails")); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("flaky: %d %s, want 502 after its attempts", resp.StatusCode, b)
	}
	if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("no-such-model", "x")); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown model: %d %s, want 404", resp.StatusCode, b)
	}
	eventually(t, 30*time.Second, "the webhook delivered", func() bool { return len(hookCalls()) > 0 })
	s.settled()
	eventually(t, 20*time.Second, "the delivery counted", func() bool {
		_, w := scrape(t, s.ops)
		return w[`sluice_webhook_deliveries_total{outcome="delivered"}`] >= 1
	})

	iTypes, iSamples := scrape(t, s.base)
	wTypes, wSamples := scrape(t, s.ops)
	exported := seriesNames(iTypes)
	for n := range seriesNames(wTypes) {
		exported[n] = true
	}

	// Every metric queried is exported.
	queried := map[string]bool{}
	checkExpr := func(where, expr string) {
		names, ok := metricNames(expr)
		if !ok {
			t.Errorf("%s: unbalanced expression %q", where, expr)
		}
		for _, n := range names {
			queried[n] = true
			if !exported[n] {
				t.Errorf("%s queries %s, which neither the ingress nor the worker exports", where, n)
			}
		}
	}
	dash := readDashboard(t)
	for title, es := range dash {
		for _, e := range es {
			checkExpr("panel "+strconv.Quote(title), e)
		}
	}
	onDashboard := maps.Clone(queried)
	for name, e := range readAlerts(t) {
		checkExpr("alert "+name, e)
	}

	// Every exported sluice_ metric is on the dashboard, and every metric is in the README.
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, types := range []map[string]string{iTypes, wTypes} {
		for name := range types {
			if strings.HasPrefix(name, "sluice_") && !strings.HasPrefix(name, "sluice_usage_key_") {
				found := false
				for n := range seriesNames(map[string]string{name: types[name]}) {
					found = found || onDashboard[n]
				}
				if !found {
					t.Errorf("%s is exported but on no dashboard panel", name)
				}
			}
			documented := strings.Contains(string(readme), "`"+name+"`")
			if !documented && (strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_")) {
				documented = strings.Contains(string(readme), "`go_*`") && strings.Contains(string(readme), "`process_*`")
			}
			if !documented {
				t.Errorf("%s is exported but not in the README's metrics list", name)
			}
		}
	}

	// Tokens and cost by model equal the ledger; per key too.
	ctx := context.Background()
	var in, out, cost, spent float64
	if err := s.db.Pool.QueryRow(ctx, `SELECT sum(prompt_tokens)::float8, sum(completion_tokens)::float8,
		sum(cost_usd)::float8, key_spent($1)::float8 FROM usage_ledger WHERE model = 'm'`, k.ID).Scan(&in, &out, &cost, &spent); err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	got := map[string]float64{
		`sluice_usage_tokens_total{model="m",type="input"}`:                        in,
		`sluice_usage_tokens_total{model="m",type="output"}`:                       out,
		`sluice_usage_cost_usd_total{model="m"}`:                                   cost,
		fmt.Sprintf(`sluice_usage_key_tokens_total{key_id=%q,type="input"}`, k.ID): in,
		fmt.Sprintf(`sluice_usage_key_cost_usd_total{key_id=%q}`, k.ID):            spent,
	}
	for series, want := range got {
		if v, ok := wSamples[series]; !ok || !near(v, want) || want == 0 {
			t.Errorf("%s = %v (exported %v), want the ledger's %v", series, v, ok, want)
		}
	}
	modelLabel := regexp.MustCompile(`model="([^"]*)"`)
	for series := range wSamples {
		if m := modelLabel.FindStringSubmatch(series); m != nil && m[1] != "m" {
			t.Errorf("series %s: want only configured models (m) as labels", series)
		}
	}

	// Attempts by channel and outcome, and the circuits.
	for series, want := range map[string]float64{
		fmt.Sprintf(`sluice_upstream_attempts_total{channel_id=%q,outcome="5xx"}`, badCh): float64(s.wcfg.MaxAttempts),
		fmt.Sprintf(`sluice_upstream_attempts_total{channel_id=%q,outcome="ok"}`, okCh):   5,
		fmt.Sprintf(`sluice_upstream_circuit_state{channel_id=%q}`, okCh):                 0,
	} {
		if v, ok := wSamples[series]; !ok || v != want {
			t.Errorf("%s = %v (exported %v), want %v", series, v, ok, want)
		}
	}
	// Three failures in a row opened it; with no success since it stays open or half-open.
	if v := wSamples[fmt.Sprintf(`sluice_upstream_circuit_state{channel_id=%q}`, badCh)]; v != 1 && v != 2 {
		t.Errorf("circuit state of the failing channel = %v, want 1 (half-open) or 2 (open)", v)
	}

	// The goroutine bounds. (go_goroutines here counts the whole test process, both
	// processes and NATS, so it is compared with the bound in TestWorkerBound, on a real
	// worker process, not here.)
	if b := iSamples["sluice_goroutines_bound"]; b != float64(2*s.icfg.MaxConns+64) {
		t.Errorf("ingress: sluice_goroutines_bound %v, want 2×INGRESS_MAX_CONNS+64 = %d", b, 2*s.icfg.MaxConns+64)
	}
	if b := wSamples["sluice_goroutines_bound"]; b < float64(workerGoroutineBound(s.wcfg.Concurrency)) {
		t.Errorf("worker: sluice_goroutines_bound %v, want at least 5k+64 = %d", b, workerGoroutineBound(s.wcfg.Concurrency))
	}
	t.Logf("dashboard: %d panels, %d metrics queried by the dashboard and the alerts; ingress exports %d families, worker %d",
		len(dash), len(queried), len(iTypes), len(wTypes))
}

// TestUsageMetricsEqualLedger_Issue14_8: with outcomes settled through the outcomes stream
// (by settlers) and written to Postgres directly (WORKER_SETTLE_VIA=postgres), a worker's
// tokens and cost by model equal the ledger's after sync, streamed and async jobs on two
// models, priced and not.
func TestUsageMetricsEqualLedger_Issue14_8(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"stream", "postgres"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, stackOpts{noWorker: true})
			s.wcfg.SettleVia = via
			s.wcfg.UnpricedInput, s.wcfg.UnpricedOutput = 10, 30
			s.ops, s.stopW = s.startWorker()
			_, srv := providertest.Start(t, providertest.Config{})
			s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"priced", "unpriced"}})
			s.price("priced", 0.5, 1.5)
			k := s.newKey(nil)
			async := 0
			for i := range 8 {
				model := []string{"priced", "unpriced"}[i%2]
				body := chatBody(model, fmt.Sprintf("job %d of %s with a few words", i, via))
				switch i % 4 {
				case 1:
					body["stream"] = true
				case 3:
					resp, b := s.do(http.MethodPost, "/v1/jobs", k.Key, map[string]any{"endpoint": "/v1/chat/completions", "body": body})
					if resp.StatusCode != http.StatusAccepted {
						t.Fatalf("async %d: %d %s", i, resp.StatusCode, b)
					}
					async++
					continue
				}
				if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, body); resp.StatusCode != http.StatusOK {
					t.Fatalf("job %d: %d %s", i, resp.StatusCode, b)
				}
			}
			ctx := context.Background()
			eventually(t, 30*time.Second, "all 8 jobs in the ledger", func() bool {
				var n int
				return s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger`).Scan(&n) == nil && n == 8
			})
			s.settled()
			rows, err := s.db.Pool.Query(ctx, `SELECT model, sum(prompt_tokens)::float8, sum(completion_tokens)::float8,
				sum(cost_usd)::float8 FROM usage_ledger GROUP BY model`)
			if err != nil {
				t.Fatal(err)
			}
			type usage struct{ in, out, cost float64 }
			ledger := map[string]usage{}
			for rows.Next() {
				var m string
				var u usage
				if err := rows.Scan(&m, &u.in, &u.out, &u.cost); err != nil {
					t.Fatal(err)
				}
				ledger[m] = u
			}
			if err := rows.Err(); err != nil || len(ledger) != 2 {
				t.Fatalf("ledger by model %v: %v", ledger, err)
			}
			// A settler's count follows its commit by a moment: wait for it.
			eventually(t, 20*time.Second, "the usage metrics to equal the ledger", func() bool {
				_, w := scrape(t, s.ops)
				for m, u := range ledger {
					if w[fmt.Sprintf(`sluice_usage_tokens_total{model=%q,type="input"}`, m)] != u.in ||
						w[fmt.Sprintf(`sluice_usage_tokens_total{model=%q,type="output"}`, m)] != u.out ||
						math.Abs(w[fmt.Sprintf(`sluice_usage_cost_usd_total{model=%q}`, m)]-u.cost) > 1e-9 {
						t.Logf("ledger %s %+v; metrics in %v out %v cost %v", m, u,
							w[fmt.Sprintf(`sluice_usage_tokens_total{model=%q,type="input"}`, m)],
							w[fmt.Sprintf(`sluice_usage_tokens_total{model=%q,type="output"}`, m)],
							w[fmt.Sprintf(`sluice_usage_cost_usd_total{model=%q}`, m)])
						return false
					}
				}
				return true
			})
			t.Logf("via %s: ledger by model %+v (%d async)", via, ledger, async)
		})
	}
}
