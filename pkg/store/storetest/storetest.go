// Package storetest gives each test its own Postgres schema with migrations applied.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/migrations"
	"github.com/sluicehq/sluice/pkg/store"
)

// DefaultURL is used when TEST_DATABASE_URL is unset: the local Postgres that `make test`
// starts or finds.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// URL returns the Postgres URL tests use.
func URL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Bundle is one test's database: a pool whose search_path is a fresh schema, and a Store on it.
type Bundle struct {
	Pool   *pgxpool.Pool
	Store  *store.Store
	Sealer *store.Sealer
	// URL connects to the same schema (for binaries started by the test).
	URL string
	// EncryptionKey is the base64 key Sealer was made from.
	EncryptionKey string
}

// New creates a schema named test_<random>, applies the migrations in it, and drops it when
// the test ends. It fails the test if Postgres does not answer at URL().
func New(tb testing.TB) *Bundle {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema := "test_" + strings.ToLower(rand.Text())

	admin, err := pgx.Connect(ctx, URL())
	if err != nil {
		tb.Fatalf("connect to test Postgres at %s (set TEST_DATABASE_URL, or run `make test`, which starts one): %v", URL(), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, URL())
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})

	url := withSearchPath(URL(), schema)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("parse %s: %v", url, err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("open pool: %v", err)
	}
	tb.Cleanup(pool.Close) // runs before the schema is dropped (cleanups run last-in first-out)
	if err := migrations.Apply(ctx, pool); err != nil {
		tb.Fatalf("apply migrations: %v", err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyB64 := base64.StdEncoding.EncodeToString(key)
	sealer, err := store.NewSealer(keyB64)
	if err != nil {
		tb.Fatal(err)
	}
	return &Bundle{Pool: pool, Store: store.New(pool, sealer), Sealer: sealer, URL: url, EncryptionKey: keyB64}
}

// withSearchPath adds search_path=<schema> to a URL or keyword/value connection string.
func withSearchPath(url, schema string) string {
	if strings.Contains(url, "://") {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		return url + sep + "search_path=" + schema
	}
	return url + " search_path=" + schema
}
