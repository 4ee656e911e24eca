package store_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

// TestUnavailable_Issue14_10: a Postgres that cannot be reached, or a statement cut by its
// deadline, reads as unavailable (the API answers 503 and Retry-After); a statement the
// server refuses, a value it rejects, and a missing row do not (those are 500, 400, 404).
func TestUnavailable_Issue14_10(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := context.Background()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, refused := pgx.Connect(cctx, fmt.Sprintf("postgres://x@%s/x?connect_timeout=2", addr))

	tctx, tcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer tcancel()
	_, timedOut := db.Pool.Exec(tctx, "SELECT pg_sleep(5)")

	_, syntax := db.Pool.Exec(ctx, "SELEC 1")
	_, missing := db.Store.KeyByID(ctx, "key_nope")
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"statement past its deadline", timedOut, true},
		{"syntax error", syntax, false},
		{"no such row", missing, false},
		{"no error", nil, false},
		{"value rejected", fmt.Errorf("insert: %w", store.ErrPermanent), false},
	} {
		if c.err == nil && c.want {
			t.Fatalf("%s: got no error to classify", c.name)
		}
		if got := store.Unavailable(c.err); got != c.want {
			t.Errorf("%s (%v): Unavailable = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
