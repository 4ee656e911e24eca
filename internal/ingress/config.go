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
}

// Validate reports every out-of-range setting at once.
func (c *Config) Validate() error {
	check, errs := cli.Checker()
	c.Check(check)
	check(c.MaxBodyBytes >= 1024, "INGRESS_MAX_BODY_BYTES=%d: want at least 1024", c.MaxBodyBytes)
	check(c.MaxWaiting >= 1, "INGRESS_MAX_WAITING=%d: want at least 1", c.MaxWaiting)
	check(c.MaxConns >= c.MaxWaiting, "INGRESS_MAX_CONNS=%d: want at least INGRESS_MAX_WAITING (%d)", c.MaxConns, c.MaxWaiting)
	check(c.KeyCacheTTL >= 0, "INGRESS_KEY_CACHE_TTL=%s: want >= 0", c.KeyCacheTTL)
	check(len(c.AdminToken) >= 16, "SLUICE_ADMIN_TOKEN: want at least 16 characters")
	return errors.Join(errs()...)
}
