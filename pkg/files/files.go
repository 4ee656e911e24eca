// Package files stores the JSONL files of the Batch API in Postgres, as 1 MiB bytea chunks
// (table file_chunks, migration 0012): an upload is copied in chunk by chunk as it arrives
// (one COPY in one transaction, so a file is there whole or not at all) and a download or a
// batch runner reads it one chunk per query, so no process ever holds a whole file, and any
// ingress or worker can serve any file.
package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Purposes of a file.
const (
	PurposeBatch       = "batch"
	PurposeBatchOutput = "batch_output"
)

// Limits of an upload (API.md: 200 MB, 50,000 lines).
const (
	MaxBytes = 200 << 20
	MaxLines = 50_000
	// ChunkSize is the most one stored chunk holds.
	ChunkSize = 1 << 20
)

// Errors callers branch on.
var (
	ErrNotFound     = errors.New("files: not found")
	ErrTooLarge     = errors.New("files: file too large")
	ErrTooManyLines = errors.New("files: too many lines")
	ErrEmpty        = errors.New("files: file is empty")
)

// File is a stored file's description.
type File struct {
	ID        string
	KeyID     string
	Purpose   string
	Filename  string
	Bytes     int64
	Lines     int
	CreatedAt time.Time
}

// Limits bound what Create accepts; zero fields take MaxBytes and MaxLines.
type Limits struct {
	MaxBytes int64
	MaxLines int
}

// Store reads and writes files. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Create stores the content read from r as file f (its ID, KeyID, Purpose and Filename; the
// rest is counted), streaming it in chunks. It fails with ErrTooLarge or ErrTooManyLines as
// soon as r passes a limit, and with ErrEmpty for an empty file; nothing is kept then. A
// file with f.ID already is replaced (a batch runner writing an output file again). If
// before is not nil it is called once the content is in, before the commit: it may still
// set f's Purpose and Filename (a multipart form may name them after the file), or refuse
// the file with an error, which Create returns.
func (s *Store) Create(ctx context.Context, f File, r io.Reader, lim Limits, before func(*File) error) (File, error) {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = MaxBytes
	}
	if lim.MaxLines <= 0 {
		lim.MaxLines = MaxLines
	}
	src := &chunkSource{id: f.ID, r: r, lim: lim}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM files WHERE id = $1`, f.ID); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO files (id, key_id, purpose, filename) VALUES ($1, $2, $3, $4)
			RETURNING created_at`, f.ID, f.KeyID, f.Purpose, f.Filename).Scan(&f.CreatedAt); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"file_chunks"}, []string{"file_id", "seq", "data"}, src); err != nil {
			return err
		}
		if src.bytes == 0 {
			return ErrEmpty
		}
		f.Bytes, f.Lines = src.bytes, src.lines()
		if before != nil {
			if err := before(&f); err != nil {
				return refused{err}
			}
		}
		_, err := tx.Exec(ctx, `UPDATE files SET bytes = $2, lines = $3, purpose = $4, filename = $5 WHERE id = $1`,
			f.ID, f.Bytes, f.Lines, f.Purpose, f.Filename)
		return err
	})
	if src.err != nil {
		return File{}, src.err // the reader's error, or a limit, is the cause of the failed COPY
	}
	if r, ok := errors.AsType[refused](err); ok {
		return File{}, r.err
	}
	if err != nil {
		return File{}, fmt.Errorf("store file %s: %w", f.ID, err)
	}
	return f, nil
}

// refused carries before's error out of the transaction unwrapped.
type refused struct{ err error }

func (r refused) Error() string { return r.err.Error() }

// chunkSource feeds COPY one chunk at a time from r, counting bytes and lines.
type chunkSource struct {
	id    string
	r     io.Reader
	lim   Limits
	seq   int32
	buf   []byte
	chunk []byte
	bytes int64
	full  int  // lines ended by '\n' that held something
	open  bool // the current line holds something
	err   error
	done  bool
}

func (c *chunkSource) Next() bool {
	if c.done || c.err != nil {
		return false
	}
	// One buffer for every chunk: COPY encodes a row's values into its own buffer when it
	// takes them, so the last chunk is not held once Next is called again.
	if c.buf == nil {
		c.buf = make([]byte, ChunkSize)
	}
	buf := c.buf
	n, err := io.ReadFull(c.r, buf)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.done = true
	case err != nil:
		c.err = err
		return false
	}
	if n == 0 {
		return false
	}
	c.chunk = buf[:n]
	c.bytes += int64(n)
	c.count(c.chunk)
	switch {
	case c.bytes > c.lim.MaxBytes:
		c.err = ErrTooLarge
		return false
	case c.lines() > c.lim.MaxLines:
		c.err = ErrTooManyLines
		return false
	}
	c.seq++
	return true
}

// count notes the lines of b: a line counts if it holds anything but blanks.
func (c *chunkSource) count(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		part := b
		if i >= 0 {
			part = b[:i]
		}
		if len(bytes.Trim(part, " \t\r")) > 0 {
			c.open = true
		}
		if i < 0 {
			return
		}
		if c.open {
			c.full++
		}
		c.open = false
		b = b[i+1:]
	}
}

func (c *chunkSource) lines() int {
	if c.open {
		return c.full + 1
	}
	return c.full
}

func (c *chunkSource) Values() ([]any, error) { return []any{c.id, c.seq, c.chunk}, nil }

func (c *chunkSource) Err() error { return c.err }

const fileColumns = `id, key_id, purpose, filename, bytes, lines, created_at`

func scanFile(row pgx.Row) (File, error) {
	var f File
	err := row.Scan(&f.ID, &f.KeyID, &f.Purpose, &f.Filename, &f.Bytes, &f.Lines, &f.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return File{}, ErrNotFound
	}
	return f, err
}

// Get returns key's file id, or ErrNotFound (also for another key's file).
func (s *Store) Get(ctx context.Context, keyID, id string) (File, error) {
	f, err := scanFile(s.pool.QueryRow(ctx, `SELECT `+fileColumns+` FROM files WHERE id = $1 AND key_id = $2`, id, keyID))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return File{}, fmt.Errorf("read file %s: %w", id, err)
	}
	return f, err
}

// List returns up to limit of key's files, newest first, optionally of one purpose, after the
// file id after (the cursor); more says whether more follow.
func (s *Store) List(ctx context.Context, keyID, purpose, after string, limit int) (fs []File, more bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT `+fileColumns+` FROM files
		WHERE key_id = $1 AND ($2 = '' OR purpose = $2) AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4`,
		keyID, purpose, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list files: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		f, err := scanFile(rows)
		if err != nil {
			return nil, false, fmt.Errorf("list files: %w", err)
		}
		fs = append(fs, f)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list files: %w", err)
	}
	if len(fs) > limit {
		return fs[:limit], true, nil
	}
	return fs, false, nil
}

// Delete removes key's file id and its content; ErrNotFound if the key has no such file.
func (s *Store) Delete(ctx context.Context, keyID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM files WHERE id = $1 AND key_id = $2`, id, keyID)
	if err != nil {
		return fmt.Errorf("delete file %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// WriteTo copies the content of file id (already checked to be the caller's) to w, one
// chunk per query, so a slow reader holds no connection between chunks.
func (s *Store) WriteTo(ctx context.Context, w io.Writer, id string) (int64, error) {
	var n int64
	for seq := int32(1); ; seq++ {
		var data []byte
		err := s.pool.QueryRow(ctx, `SELECT data FROM file_chunks WHERE file_id = $1 AND seq = $2`, id, seq).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read file %s chunk %d: %w", id, seq, err)
		}
		m, err := w.Write(data)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// Reader returns the content of file id as a reader that fetches one chunk per query under
// ctx (it keeps ctx, like an http.Request: it is the reader's lifetime).
func (s *Store) Reader(ctx context.Context, id string) io.Reader {
	return &reader{ctx: ctx, s: s, id: id}
}

type reader struct {
	ctx  context.Context // the lifetime of one read of the file
	s    *Store
	id   string
	seq  int32
	buf  []byte
	done bool
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		r.seq++
		var data []byte
		err := r.s.pool.QueryRow(r.ctx, `SELECT data FROM file_chunks WHERE file_id = $1 AND seq = $2`, r.id, r.seq).
			Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			r.done = true
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read file %s chunk %d: %w", r.id, r.seq, err)
		}
		r.buf = data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
