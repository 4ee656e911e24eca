package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/secret"
)

// Common is the settings the ingress and the worker both read, declared once and embedded
// in each binary's Config, so the two cannot disagree about a name, a default or a range.
type Common struct {
	DatabaseURL         secret.Secret `env:"DATABASE_URL,required,notEmpty"`
	NATSURL             secret.Secret `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"` // may carry a password
	NATSCreds           string        `env:"NATS_CREDS"`
	NATSNkey            string        `env:"NATS_NKEY"`
	NATSTLSCA           string        `env:"NATS_TLS_CA"`
	NATSTLSCert         string        `env:"NATS_TLS_CERT"`
	NATSTLSKey          string        `env:"NATS_TLS_KEY"`
	EncryptionKey       secret.Secret `env:"SLUICE_ENCRYPTION_KEY,required,notEmpty"`
	EncryptionKeysOld   secret.List   `env:"SLUICE_ENCRYPTION_KEYS_OLD"`
	JobTimeout          time.Duration `env:"JOB_TIMEOUT" envDefault:"15m"`
	ShutdownGrace       time.Duration `env:"SHUTDOWN_GRACE" envDefault:"30s"`
	QueueMaxJobs        int64         `env:"QUEUE_MAX_JOBS" envDefault:"100000"`
	QueueMaxBytes       int64         `env:"QUEUE_MAX_BYTES" envDefault:"-1"`
	KeyMaxQueued        int64         `env:"KEY_MAX_QUEUED" envDefault:"10000"`
	QueueReplicas       int           `env:"QUEUE_REPLICAS" envDefault:"1"`
	DBMaxConns          int32         `env:"DB_MAX_CONNS" envDefault:"16"`
	WebhookAllowPrivate bool          `env:"WEBHOOK_ALLOW_PRIVATE" envDefault:"false"`
	ChannelRefresh      time.Duration `env:"CHANNEL_REFRESH" envDefault:"10s"`
	LogLevel            slog.Level    `env:"LOG_LEVEL" envDefault:"info"`
	PprofAddr           string        `env:"PPROF_ADDR"`
}

// Check reports each out-of-range common setting through check, as each Config's
// Validate does for its own.
func (c *Common) Check(check func(ok bool, format string, args ...any)) {
	check(c.JobTimeout >= time.Second && c.JobTimeout <= 24*time.Hour, "JOB_TIMEOUT=%s: want 1s..24h", c.JobTimeout)
	check(c.ShutdownGrace >= 0, "SHUTDOWN_GRACE=%s: want >= 0", c.ShutdownGrace)
	check(c.QueueMaxJobs >= 1, "QUEUE_MAX_JOBS=%d: want at least 1", c.QueueMaxJobs)
	check(c.QueueMaxBytes == -1 || c.QueueMaxBytes >= 1<<20, "QUEUE_MAX_BYTES=%d: want at least 1048576, or -1 for no cap", c.QueueMaxBytes)
	check(c.QueueReplicas >= 1 && c.QueueReplicas <= 5, "QUEUE_REPLICAS=%d: want 1..5 (JetStream's limit; 3 in a cluster)", c.QueueReplicas)
	check(c.KeyMaxQueued >= 1, "KEY_MAX_QUEUED=%d: want at least 1", c.KeyMaxQueued)
	check(c.DBMaxConns >= 1, "DB_MAX_CONNS=%d: want at least 1", c.DBMaxConns)
	check(c.NATSCreds == "" || c.NATSNkey == "", "NATS_CREDS and NATS_NKEY are both set: want one")
	check((c.NATSTLSCert == "") == (c.NATSTLSKey == ""), "NATS_TLS_CERT and NATS_TLS_KEY: want both or neither")
	check(c.ChannelRefresh >= 100*time.Millisecond, "CHANNEL_REFRESH=%s: want at least 100ms", c.ChannelRefresh)
}

// Queue is the job queue's configuration as both binaries must see it.
func (c *Common) Queue() jobs.QueueConfig {
	return jobs.QueueConfig{MaxJobs: c.QueueMaxJobs, MaxBytes: c.QueueMaxBytes,
		MaxQueuedPerKey: c.KeyMaxQueued, JobTimeout: c.JobTimeout, Replicas: c.QueueReplicas}
}

// NATS is how to reach NATS, for jobs.Connect; name is the connection's name.
func (c *Common) NATS(name string) jobs.ConnOptions {
	return jobs.ConnOptions{URL: c.NATSURL.Reveal(), Name: name, Creds: c.NATSCreds, NkeySeed: c.NATSNkey,
		TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey}
}

// Checker collects range errors for a Validate method: check(ok, format, args…) records
// one when ok is false; errs returns them all.
func Checker() (check func(ok bool, format string, args ...any), errs func() []error) {
	var list []error
	return func(ok bool, format string, args ...any) {
			if !ok {
				list = append(list, fmt.Errorf(format, args...))
			}
		}, func() []error {
			return list
		}
}
