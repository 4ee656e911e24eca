// Package cli holds what both binaries' main functions share: reading the environment into
// a config struct (exit status 2 naming every bad variable), the logger, and the
// `healthcheck` subcommand used by container health checks.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// ExitConfig is the exit status for a bad configuration.
const ExitConfig = 2

// Validator is a config that checks its own ranges.
type Validator interface{ Validate() error }

// Load reads environ into cfg and validates it. The error lists every bad variable, one per line.
func Load(cfg Validator, environ map[string]string) error {
	var errs []error
	bad := map[string]bool{} // variables already reported, so range checks don't repeat them
	if err := env.ParseWithOptions(cfg, env.Options{Environment: environ}); err != nil {
		agg, ok := errors.AsType[env.AggregateError](err)
		if !ok {
			return err
		}
		for _, e := range agg.Errors {
			switch e := e.(type) { //nolint:errorlint // env.AggregateError holds its errors as they are, unwrapped
			case env.EnvVarIsNotSetError:
				bad[e.Key] = true
				errs = append(errs, fmt.Errorf("%s: required, not set", e.Key))
			case env.EmptyEnvVarError:
				bad[e.Key] = true
				errs = append(errs, fmt.Errorf("%s: must not be empty", e.Key))
			case env.ParseError:
				key := envKey(cfg, e.Name)
				bad[key] = true
				errs = append(errs, fmt.Errorf("%s: %v", key, e.Err))
			default:
				errs = append(errs, e)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			name, _, _ := strings.Cut(line, "=")
			name, _, _ = strings.Cut(name, ":")
			if !bad[name] {
				errs = append(errs, errors.New(line))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, e := range errs {
		for _, line := range strings.Split(e.Error(), "\n") {
			b.WriteString("\n  - " + line)
		}
	}
	return errors.New(b.String())
}

// Environ returns the process environment as a map.
func Environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// Logger returns the JSON logger every binary uses.
func Logger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// Healthcheck GETs http://127.0.0.1:<port of addr>/readyz and returns nil on 200. It exists
// because the distroless image has no curl.
func Healthcheck(addr string) error {
	port := addr[strings.LastIndex(addr, ":")+1:]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+port+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return err
	}
	httpbody.Close(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}

// envKey returns the environment variable of a config struct field.
func envKey(cfg any, field string) string {
	t := reflect.TypeOf(cfg)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	f, ok := t.FieldByName(field)
	if !ok {
		return ""
	}
	key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return key
}
