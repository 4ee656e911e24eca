package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors callers branch on.
var (
	// ErrNotFound means the row does not exist (or belongs to another key).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means a unique value (an idempotency key) is already taken.
	ErrConflict = errors.New("store: conflict")
	// ErrPermanent means Postgres rejected the data itself (an integrity or data error):
	// retrying the same write cannot succeed.
	ErrPermanent = errors.New("store: rejected")
)

// Store is the Postgres store. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	sealer *Sealer
	// unpriced is what a job is charged per 1M tokens when neither its upstream model nor
	// its alias has a price (SetUnpricedPrice).
	unpricedIn, unpricedOut float64
}

// SetUnpricedPrice sets the price, in USD per 1M input and output tokens, charged for a model
// with no price in the price table (neither the upstream's name nor the alias). The default
// is 0; the worker sets PRICE_UNPRICED_INPUT/OUTPUT_PER_MTOK, so that nothing is free
// under a budget by omission. Call it before the Store is used.
func (s *Store) SetUnpricedPrice(inputPerMTok, outputPerMTok float64) {
	s.unpricedIn, s.unpricedOut = inputPerMTok, outputPerMTok
}

// New returns a Store on pool. sealer encrypts upstream keys and webhook secrets.
func New(pool *pgxpool.Pool, sealer *Sealer) *Store {
	return &Store{pool: pool, sealer: sealer}
}

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.pool.Ping(ctx)
}

// NewPool opens a pgx pool on url with at most maxConns connections, and pings it.
func NewPool(ctx context.Context, url string, maxConns int32, appName string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping postgres: %w", err)
	}
	return pool, nil
}

// classify marks integrity and data errors (SQLSTATE classes 22 and 23) as ErrPermanent so
// callers know not to retry them; other errors (connection loss, timeouts) pass unchanged.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code[:2] == "22" || pgErr.Code[:2] == "23") {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	return err
}

// Unavailable reports whether err means Postgres is out of reach or refusing work for now (a
// refused, cut or timed-out connection; a server shutting down, starting up or
// out of connections), so the caller should answer "retry shortly" rather than "bug".
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, ErrPermanent) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		// 08: connection exception; 53: insufficient resources; 57P01-03: admin or crash
		// shutdown, cannot connect now.
		return pgErr.Code[:2] == "08" || pgErr.Code[:2] == "53" || strings.HasPrefix(pgErr.Code, "57P")
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return pgconn.Timeout(err) || pgconn.SafeToRetry(err) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
