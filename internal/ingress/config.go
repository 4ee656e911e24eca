package ingress

import (
	"errors"
	"time"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/pkg/secret"
)

// Config is the ingress's configuration, read from the environment (see the README). The
// settings it shares with the worker are in cli.Common.
type Config struct {
	cli.Common
	AdminToken   secret.Secret `env:"SLUICE_ADMIN_TOKEN,required,notEmpty"`
	Addr         string        `env:"INGRESS_ADDR" envDefault:":8080"`
	MaxBodyBytes int64         `env:"INGRESS_MAX_BODY_BYTES" envDefault:"1000000"`
	MaxWaiting   int           `env:"INGRESS_MAX_WAITING" envDefault:"4096"`
	MaxConns     int           `env:"INGRESS_MAX_CONNS" envDefault:"8192"`
	H2C          bool          `env:"INGRESS_H2C" envDefault:"false"`
	KeyCacheTTL  time.Duration `env:"INGRESS_KEY_CACHE_TTL" envDefault:"10s"`
	// WriteStallTimeout bounds each write of a response (a piece of at most 64 KiB): a
	// client that reads nothing for this long is cut off. Zero: defaultWriteStall.
	WriteStallTimeout time.Duration `env:"INGRESS_WRITE_STALL_TIMEOUT" envDefault:"30s"`
	// MaxReads bounds the job reads (GET /v1/jobs, GET /v1/jobs/{id}) in progress at once.
	// Zero: defaultMaxReads.
	MaxReads int `env:"INGRESS_MAX_READS" envDefault:"64"`
	// MaxConnsPerIP bounds the connections open at once from one client address (IPv6:
	// one /64). Zero: no cap.
	MaxConnsPerIP int `env:"INGRESS_MAX_CONNS_PER_IP" envDefault:"256"`
	// MetricsAddr and AdminAddr, if set, move /metrics and /admin to listeners of their
	// own (the same address serves both); the public port then answers them 404.
	MetricsAddr string `env:"METRICS_ADDR"`
	AdminAddr   string `env:"ADMIN_ADDR"`
	// CacheMaxBytes bounds the response cache (the JetStream KV bucket SLUICE_CACHE); 0
	// turns the cache off. CacheMaxTTL is the longest an answer is cached, whatever the
	// request or key asks; CacheMaxEntryBytes the largest answer cached.
	CacheMaxBytes      int64         `env:"CACHE_MAX_BYTES" envDefault:"268435456"`
	CacheMaxTTL        time.Duration `env:"CACHE_MAX_TTL" envDefault:"24h"`
	CacheMaxEntryBytes int           `env:"CACHE_MAX_ENTRY_BYTES" envDefault:"921600"`
}

// Validate reports every out-of-range setting at once.
func (c *Config) Validate() error {
	check, errs := cli.Checker()
	c.Check(check)
	check(c.MaxBodyBytes >= 1024, "INGRESS_MAX_BODY_BYTES=%d: want at least 1024", c.MaxBodyBytes)
	check(c.MaxWaiting >= 1, "INGRESS_MAX_WAITING=%d: want at least 1", c.MaxWaiting)
	check(c.MaxConns >= c.MaxWaiting, "INGRESS_MAX_CONNS=%d: want at least INGRESS_MAX_WAITING (%d)", c.MaxConns, c.MaxWaiting)
	check(c.KeyCacheTTL >= 0, "INGRESS_KEY_CACHE_TTL=%s: want >= 0", c.KeyCacheTTL)
	check(c.WriteStallTimeout >= time.Second, "INGRESS_WRITE_STALL_TIMEOUT=%s: want at least 1s", c.WriteStallTimeout)
	check(c.MaxReads >= 1, "INGRESS_MAX_READS=%d: want at least 1", c.MaxReads)
	check(c.MaxConnsPerIP >= 0, "INGRESS_MAX_CONNS_PER_IP=%d: want 0 (no cap) or more", c.MaxConnsPerIP)
	check(c.MetricsAddr == "" || c.MetricsAddr != c.Addr, "METRICS_ADDR=%s: want an address other than INGRESS_ADDR", c.MetricsAddr)
	check(c.AdminAddr == "" || c.AdminAddr != c.Addr, "ADMIN_ADDR=%s: want an address other than INGRESS_ADDR", c.AdminAddr)
	check(c.CacheMaxBytes >= 0, "CACHE_MAX_BYTES=%d: want 0 (no cache) or more", c.CacheMaxBytes)
	check(c.CacheMaxTTL >= time.Second, "CACHE_MAX_TTL=%s: want at least 1s", c.CacheMaxTTL)
	check(c.CacheMaxEntryBytes >= 1024 && c.CacheMaxEntryBytes <= 64<<20,
		"CACHE_MAX_ENTRY_BYTES=%d: want 1024 to 67108864", c.CacheMaxEntryBytes)
	check(len(c.AdminToken) >= 16, "SLUICE_ADMIN_TOKEN: want at least 16 characters")
	return errors.Join(errs()...)
}
