package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ResealResult counts what Reseal did.
type ResealResult struct {
	// Resealed counts values re-encrypted under the current key.
	Resealed int
	// Current counts values already sealed under the current key, left as they were.
	Current int
	// Unreadable names the rows ("channel ch_…", "key key_…") whose value no configured key
	// opens; they are left as they were.
	Unreadable []string
}

// sealedColumn is one column of sealed values. The SQL is fixed here, never built from
// input: select takes (after id, limit), update takes (ids, values).
type sealedColumn struct {
	what   string // how a row is named in ResealResult.Unreadable
	selec  string
	update string
}

var sealedColumns = []sealedColumn{
	{
		what: "channel",
		selec: `SELECT id, api_key FROM channels WHERE id > $1 AND length(api_key) > 0
			ORDER BY id LIMIT $2 FOR UPDATE`,
		update: `UPDATE channels c SET api_key = v.value FROM unnest($1::text[], $2::bytea[]) AS v(id, value)
			WHERE c.id = v.id`,
	},
	{
		what: "key",
		selec: `SELECT id, webhook_secret FROM api_keys WHERE id > $1 AND length(webhook_secret) > 0
			ORDER BY id LIMIT $2 FOR UPDATE`,
		update: `UPDATE api_keys k SET webhook_secret = v.value FROM unnest($1::text[], $2::bytea[]) AS v(id, value)
			WHERE k.id = v.id`,
	},
}

// Reseal re-encrypts every sealed value (channels' upstream keys, API keys' webhook secrets)
// under the Sealer's current key, batch rows at a time, each batch in its own short
// transaction that locks only its rows. It is idempotent: values already under the current
// key are counted and left alone, so running it again, or after an interruption, changes
// nothing more. Values no configured key opens are reported in Unreadable and left as they
// are; the others are still resealed. It returns the counts so far and an error if a query
// fails or ctx ends. Run it after every process has the new key as current (and the old
// one in its old keys), so no process seals with the old key meanwhile.
func (s *Store) Reseal(ctx context.Context, batch int) (ResealResult, error) {
	batch = max(batch, 1)
	var res ResealResult
	for _, col := range sealedColumns {
		for after := ""; ; {
			last, n, err := s.resealBatch(ctx, col, after, batch, &res)
			if err != nil {
				return res, fmt.Errorf("reseal %s values after %q: %w", col.what, after, err)
			}
			if n < batch {
				break
			}
			after = last
		}
	}
	return res, nil
}

// resealBatch reseals up to batch rows of col with ids after after; it returns the last id
// seen and how many rows it read.
func (s *Store) resealBatch(ctx context.Context, col sealedColumn, after string, batch int, res *ResealResult) (string, int, error) {
	last, n := after, 0
	var counted ResealResult // added to res only once the transaction commits
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		last, n, counted = after, 0, ResealResult{}
		rows, err := tx.Query(ctx, col.selec, after, batch)
		if err != nil {
			return err
		}
		var ids []string
		var values [][]byte
		for rows.Next() {
			var id string
			var sealed []byte
			if err := rows.Scan(&id, &sealed); err != nil {
				rows.Close()
				return err
			}
			last, n = id, n+1
			plain, err := s.sealer.Open(sealed)
			switch {
			case err != nil:
				counted.Unreadable = append(counted.Unreadable, col.what+" "+id)
			case s.sealer.IsCurrent(sealed):
				counted.Current++
			default:
				ids, values = append(ids, id), append(values, s.sealer.Seal(plain))
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, col.update, ids, values); err != nil {
			return err
		}
		counted.Resealed = len(ids)
		return nil
	})
	if err != nil {
		return after, 0, err
	}
	res.Resealed += counted.Resealed
	res.Current += counted.Current
	res.Unreadable = append(res.Unreadable, counted.Unreadable...)
	return last, n, nil
}
