package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/pkg/secret"
)

// Config is the worker's configuration, read from the environment (see the README).
type Config struct {
	DatabaseURL         secret.Secret `env:"DATABASE_URL,required,notEmpty"`
	NATSURL             string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	EncryptionKey       secret.Secret `env:"SLUICE_ENCRYPTION_KEY,required,notEmpty"`
	EncryptionKeysOld   secret.List   `env:"SLUICE_ENCRYPTION_KEYS_OLD"`
	Addr                string        `env:"WORKER_ADDR" envDefault:":9090"`
	Concurrency         int           `env:"WORKER_CONCURRENCY" envDefault:"64"`
	JobTimeout          time.Duration `env:"JOB_TIMEOUT" envDefault:"15m"`
	IdleTimeout         time.Duration `env:"UPSTREAM_IDLE_TIMEOUT" envDefault:"5m"`
	IdleConnTimeout     time.Duration `env:"UPSTREAM_IDLE_CONN_TIMEOUT" envDefault:"90s"`
	MaxAttempts         int           `env:"UPSTREAM_MAX_ATTEMPTS" envDefault:"3"`
	MaxResponseBytes    int64         `env:"UPSTREAM_MAX_RESPONSE_BYTES" envDefault:"67108864"`
	UpstreamH2C         bool          `env:"UPSTREAM_H2C" envDefault:"false"`
	WebhookAllowPrivate bool          `env:"WEBHOOK_ALLOW_PRIVATE" envDefault:"false"`
	WebhookConcurrency  int           `env:"WEBHOOK_CONCURRENCY" envDefault:"8"`
	WebhookRetryBase    time.Duration `env:"WEBHOOK_RETRY_BASE" envDefault:"10s"`
	AckWait             time.Duration `env:"JOB_ACK_WAIT" envDefault:"60s"`
	MaxAckPending       int           `env:"JOB_MAX_ACK_PENDING" envDefault:"4096"`
	QueueMaxJobs        int64         `env:"QUEUE_MAX_JOBS" envDefault:"100000"`
	ShutdownGrace       time.Duration `env:"SHUTDOWN_GRACE" envDefault:"30s"`
	ChannelRefresh      time.Duration `env:"CHANNEL_REFRESH" envDefault:"10s"`
	Retention           time.Duration `env:"JOB_RETENTION" envDefault:"720h"`
	DBMaxConns          int32         `env:"DB_MAX_CONNS" envDefault:"16"`
	LogLevel            slog.Level    `env:"LOG_LEVEL" envDefault:"info"`
	PprofAddr           string        `env:"PPROF_ADDR"`
}

// Validate reports every out-of-range setting at once.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Concurrency >= 1 && c.Concurrency <= 100_000, "WORKER_CONCURRENCY=%d: want 1..100000", c.Concurrency)
	check(c.JobTimeout >= time.Second && c.JobTimeout <= 24*time.Hour, "JOB_TIMEOUT=%s: want 1s..24h", c.JobTimeout)
	check(c.IdleTimeout >= 100*time.Millisecond, "UPSTREAM_IDLE_TIMEOUT=%s: want at least 100ms", c.IdleTimeout)
	check(c.IdleConnTimeout >= time.Second, "UPSTREAM_IDLE_CONN_TIMEOUT=%s: want at least 1s", c.IdleConnTimeout)
	check(c.MaxAttempts >= 1 && c.MaxAttempts <= 20, "UPSTREAM_MAX_ATTEMPTS=%d: want 1..20", c.MaxAttempts)
	check(c.MaxResponseBytes >= 1<<20, "UPSTREAM_MAX_RESPONSE_BYTES=%d: want at least 1048576", c.MaxResponseBytes)
	check(c.AckWait >= 3*time.Second, "JOB_ACK_WAIT=%s: want at least 3s", c.AckWait)
	check(c.MaxAckPending >= c.Concurrency, "JOB_MAX_ACK_PENDING=%d: want at least WORKER_CONCURRENCY (%d)", c.MaxAckPending, c.Concurrency)
	check(c.QueueMaxJobs >= 1, "QUEUE_MAX_JOBS=%d: want at least 1", c.QueueMaxJobs)
	check(c.ShutdownGrace >= 0, "SHUTDOWN_GRACE=%s: want >= 0", c.ShutdownGrace)
	check(c.ChannelRefresh >= 100*time.Millisecond, "CHANNEL_REFRESH=%s: want at least 100ms", c.ChannelRefresh)
	check(c.Retention >= time.Hour, "JOB_RETENTION=%s: want at least 1h", c.Retention)
	check(c.WebhookConcurrency >= 1 && c.WebhookConcurrency <= 1024, "WEBHOOK_CONCURRENCY=%d: want 1..1024", c.WebhookConcurrency)
	check(c.WebhookRetryBase >= 10*time.Millisecond && c.WebhookRetryBase <= time.Hour,
		"WEBHOOK_RETRY_BASE=%s: want 10ms..1h", c.WebhookRetryBase)
	check(c.DBMaxConns >= 1, "DB_MAX_CONNS=%d: want at least 1", c.DBMaxConns)
	return errors.Join(errs...)
}
