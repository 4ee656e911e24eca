package worker

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/pkg/jobs"
)

// Config is the worker's configuration, read from the environment (see the README). The
// settings it shares with the ingress are in cli.Common.
type Config struct {
	cli.Common
	Addr             string        `env:"WORKER_ADDR" envDefault:":9090"`
	Concurrency      int           `env:"WORKER_CONCURRENCY" envDefault:"2048"`
	IdleTimeout      time.Duration `env:"UPSTREAM_IDLE_TIMEOUT" envDefault:"5m"`
	FirstByteTimeout time.Duration `env:"UPSTREAM_FIRST_BYTE_TIMEOUT" envDefault:"3m"`
	IdleConnTimeout  time.Duration `env:"UPSTREAM_IDLE_CONN_TIMEOUT" envDefault:"90s"`
	MaxAttempts      int           `env:"UPSTREAM_MAX_ATTEMPTS" envDefault:"3"`
	MaxResponseBytes int64         `env:"UPSTREAM_MAX_RESPONSE_BYTES" envDefault:"67108864"`
	UpstreamH2C      bool          `env:"UPSTREAM_H2C" envDefault:"false"`
	// ResponsesHosts are the hosts ("host" or "host:port") whose OpenAI-compatible API has
	// /v1/responses: an openai channel there passes Responses calls through. "none": no host.
	ResponsesHosts []string `env:"UPSTREAM_RESPONSES_HOSTS" envDefault:"api.openai.com"`
	// ResponsesRecapBytes caps the text a translated Responses stream repeats in its
	// closing events (held until the stream ends).
	ResponsesRecapBytes int `env:"RESPONSES_RECAP_MAX_BYTES" envDefault:"4194304"`
	WebhookConcurrency  int `env:"WEBHOOK_CONCURRENCY" envDefault:"8"`
	// WebhookKeyConcurrency caps one key's webhook attempts in flight in this worker.
	WebhookKeyConcurrency int           `env:"WEBHOOK_KEY_CONCURRENCY" envDefault:"2"`
	WebhookRetryBase      time.Duration `env:"WEBHOOK_RETRY_BASE" envDefault:"10s"`
	AckWait               time.Duration `env:"JOB_ACK_WAIT" envDefault:"60s"`
	MaxAckPending         int           `env:"JOB_MAX_ACK_PENDING" envDefault:"16384"`
	MaxDeliver            int           `env:"JOB_MAX_DELIVER" envDefault:"10"`
	Retention             time.Duration `env:"JOB_RETENTION" envDefault:"720h"`
	KeyCacheTTL           time.Duration `env:"WORKER_KEY_CACHE_TTL" envDefault:"10s"`
	KeyShare              float64       `env:"WORKER_KEY_SHARE" envDefault:"0.5"`
	// BatchShare is the fraction of the slots batch lines may hold at once.
	BatchShare float64 `env:"WORKER_BATCH_SHARE" envDefault:"0.25"`
	// SettleVia is where an outcome becomes durable before the reply: "stream" (the
	// outcomes stream; settlers write Postgres in batches) or "postgres" (written first).
	SettleVia string `env:"WORKER_SETTLE_VIA" envDefault:"stream"`
	Settlers  int    `env:"WORKER_SETTLERS" envDefault:"1"`
	// SettleLinger is how long a settler holding one outcome waits for more to fill its
	// batch: fewer, larger Postgres writes and pulls at a low rate, against that much later
	// settlement (answers do not wait for it; async completions are announced after it).
	SettleLinger time.Duration `env:"WORKER_SETTLE_LINGER" envDefault:"20ms"`
	// The price of a model with none in the price table, USD per 1M tokens: deliberately
	// high, so that an unpriced model is never free under a budget by omission.
	UnpricedInput  float64 `env:"PRICE_UNPRICED_INPUT_PER_MTOK" envDefault:"10"`
	UnpricedOutput float64 `env:"PRICE_UNPRICED_OUTPUT_PER_MTOK" envDefault:"30"`
	// MetricsPerKey adds usage counters labelled by API key id: one series per key.
	MetricsPerKey bool `env:"METRICS_PER_KEY" envDefault:"false"`
}

// Queue is the job stream and consumer configuration: the common part plus what only the
// worker sets (it owns the consumer).
func (c *Config) Queue() jobs.QueueConfig {
	q := c.Common.Queue()
	q.AckWait, q.MaxAckPending, q.MaxDeliver = c.AckWait, c.MaxAckPending, c.MaxDeliver
	return q
}

// Validate reports every out-of-range setting at once.
func (c *Config) Validate() error {
	check, errs := cli.Checker()
	c.Check(check)
	check(c.Concurrency >= 1 && c.Concurrency <= 100_000, "WORKER_CONCURRENCY=%d: want 1..100000", c.Concurrency)
	check(c.IdleTimeout >= 100*time.Millisecond, "UPSTREAM_IDLE_TIMEOUT=%s: want at least 100ms", c.IdleTimeout)
	check(c.FirstByteTimeout >= 100*time.Millisecond, "UPSTREAM_FIRST_BYTE_TIMEOUT=%s: want at least 100ms", c.FirstByteTimeout)
	check(c.IdleConnTimeout >= time.Second, "UPSTREAM_IDLE_CONN_TIMEOUT=%s: want at least 1s", c.IdleConnTimeout)
	check(c.MaxAttempts >= 1 && c.MaxAttempts <= 20, "UPSTREAM_MAX_ATTEMPTS=%d: want 1..20", c.MaxAttempts)
	check(c.MaxResponseBytes >= 1<<20, "UPSTREAM_MAX_RESPONSE_BYTES=%d: want at least 1048576", c.MaxResponseBytes)
	check(c.ResponsesRecapBytes >= 1024 && c.ResponsesRecapBytes <= 1<<30,
		"RESPONSES_RECAP_MAX_BYTES=%d: want 1024..1073741824", c.ResponsesRecapBytes)
	for _, h := range c.nativeResponsesHosts() {
		check(validHost(h), "UPSTREAM_RESPONSES_HOSTS: %q is not a host or host:port", h)
	}
	check(c.AckWait >= 3*time.Second, "JOB_ACK_WAIT=%s: want at least 3s", c.AckWait)
	check(c.MaxAckPending >= c.Concurrency, "JOB_MAX_ACK_PENDING=%d: want at least WORKER_CONCURRENCY (%d)", c.MaxAckPending, c.Concurrency)
	check(c.MaxDeliver >= 2 && c.MaxDeliver <= 100, "JOB_MAX_DELIVER=%d: want 2..100", c.MaxDeliver)
	check(c.UnpricedInput >= 0 && c.UnpricedOutput >= 0 && c.UnpricedInput <= 1e6 && c.UnpricedOutput <= 1e6,
		"PRICE_UNPRICED_INPUT/OUTPUT_PER_MTOK=%g/%g: want 0..1e6", c.UnpricedInput, c.UnpricedOutput)
	check(c.KeyShare > 0 && c.KeyShare <= 1, "WORKER_KEY_SHARE=%g: want a fraction in (0, 1]", c.KeyShare)
	check(c.BatchShare > 0 && c.BatchShare <= 1, "WORKER_BATCH_SHARE=%g: want a fraction in (0, 1]", c.BatchShare)
	check(c.KeyCacheTTL >= time.Second && c.KeyCacheTTL <= time.Hour, "WORKER_KEY_CACHE_TTL=%s: want 1s..1h", c.KeyCacheTTL)
	check(c.SettleVia == "stream" || c.SettleVia == "postgres", "WORKER_SETTLE_VIA=%q: want stream or postgres", c.SettleVia)
	check(c.Settlers >= 1 && c.Settlers <= 16, "WORKER_SETTLERS=%d: want 1..16", c.Settlers)
	check(c.SettleLinger >= 0 && c.SettleLinger <= time.Second, "WORKER_SETTLE_LINGER=%s: want 0..1s", c.SettleLinger)
	check(c.Retention >= time.Hour, "JOB_RETENTION=%s: want at least 1h", c.Retention)
	check(c.WebhookConcurrency >= 1 && c.WebhookConcurrency <= 1024, "WEBHOOK_CONCURRENCY=%d: want 1..1024", c.WebhookConcurrency)
	check(c.WebhookKeyConcurrency >= 1 && c.WebhookKeyConcurrency <= 1024, "WEBHOOK_KEY_CONCURRENCY=%d: want 1..1024", c.WebhookKeyConcurrency)
	check(c.WebhookRetryBase >= 10*time.Millisecond && c.WebhookRetryBase <= time.Hour,
		"WEBHOOK_RETRY_BASE=%s: want 10ms..1h", c.WebhookRetryBase)
	return errors.Join(errs()...)
}

// validHost reports whether h is a host name or address, with an optional port.
func validHost(h string) bool {
	h = strings.TrimSpace(h)
	if h == "" || strings.ContainsAny(h, "/?#@ ") {
		return false
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		n, err := strconv.Atoi(port)
		return host != "" && err == nil && n >= 1 && n <= 65535
	}
	return !strings.Contains(h, ":") || net.ParseIP(strings.Trim(h, "[]")) != nil
}

// nativeResponsesHosts is ResponsesHosts, with "none" for no host (an empty variable means
// the default).
func (c *Config) nativeResponsesHosts() []string {
	if len(c.ResponsesHosts) == 1 && strings.EqualFold(strings.TrimSpace(c.ResponsesHosts[0]), "none") {
		return nil
	}
	return c.ResponsesHosts
}
