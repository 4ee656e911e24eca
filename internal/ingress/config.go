package ingress

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/pkg/secret"
)

// Config is the ingress's configuration, read from the environment (see the README).
type Config struct {
	DatabaseURL         secret.Secret `env:"DATABASE_URL,required,notEmpty"`
	NATSURL             string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	AdminToken          secret.Secret `env:"SLUICE_ADMIN_TOKEN,required,notEmpty"`
	EncryptionKey       secret.Secret `env:"SLUICE_ENCRYPTION_KEY,required,notEmpty"`
	EncryptionKeysOld   secret.List   `env:"SLUICE_ENCRYPTION_KEYS_OLD"`
	Addr                string        `env:"INGRESS_ADDR" envDefault:":8080"`
	JobTimeout          time.Duration `env:"JOB_TIMEOUT" envDefault:"15m"`
	MaxBodyBytes        int64         `env:"INGRESS_MAX_BODY_BYTES" envDefault:"1000000"`
	MaxWaiting          int           `env:"INGRESS_MAX_WAITING" envDefault:"4096"`
	MaxConns            int           `env:"INGRESS_MAX_CONNS" envDefault:"8192"`
	H2C                 bool          `env:"INGRESS_H2C" envDefault:"false"`
	KeyCacheTTL         time.Duration `env:"INGRESS_KEY_CACHE_TTL" envDefault:"10s"`
	ChannelRefresh      time.Duration `env:"CHANNEL_REFRESH" envDefault:"10s"`
	ShutdownGrace       time.Duration `env:"SHUTDOWN_GRACE" envDefault:"30s"`
	QueueMaxJobs        int64         `env:"QUEUE_MAX_JOBS" envDefault:"100000"`
	DBMaxConns          int32         `env:"DB_MAX_CONNS" envDefault:"16"`
	WebhookAllowPrivate bool          `env:"WEBHOOK_ALLOW_PRIVATE" envDefault:"false"`
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
	check(c.JobTimeout >= time.Second && c.JobTimeout <= 24*time.Hour, "JOB_TIMEOUT=%s: want 1s..24h", c.JobTimeout)
	check(c.MaxBodyBytes >= 1024, "INGRESS_MAX_BODY_BYTES=%d: want at least 1024", c.MaxBodyBytes)
	check(c.MaxWaiting >= 1, "INGRESS_MAX_WAITING=%d: want at least 1", c.MaxWaiting)
	check(c.MaxConns >= c.MaxWaiting, "INGRESS_MAX_CONNS=%d: want at least INGRESS_MAX_WAITING (%d)", c.MaxConns, c.MaxWaiting)
	check(c.KeyCacheTTL >= 0, "INGRESS_KEY_CACHE_TTL=%s: want >= 0", c.KeyCacheTTL)
	check(c.ChannelRefresh >= 100*time.Millisecond, "CHANNEL_REFRESH=%s: want at least 100ms", c.ChannelRefresh)
	check(c.ShutdownGrace >= 0, "SHUTDOWN_GRACE=%s: want >= 0", c.ShutdownGrace)
	check(c.QueueMaxJobs >= 1, "QUEUE_MAX_JOBS=%d: want at least 1", c.QueueMaxJobs)
	check(c.DBMaxConns >= 1, "DB_MAX_CONNS=%d: want at least 1", c.DBMaxConns)
	check(len(c.AdminToken) >= 16, "SLUICE_ADMIN_TOKEN: want at least 16 characters")
	return errors.Join(errs...)
}
