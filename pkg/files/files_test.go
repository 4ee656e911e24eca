package files_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

// TestFileChunks_Issue12_1: content over several chunks round-trips byte for byte, lines are
// counted (blank lines not), and the limits refuse a file without keeping any of it.
func TestFileChunks_Issue12_1(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.New(t)
	fs := files.New(db.Pool)
	var content bytes.Buffer
	for i := 0; content.Len() < 2*files.ChunkSize+files.ChunkSize/2; i++ {
		content.WriteString(`{"custom_id":"` + strings.Repeat("x", 100+i%50) + `"}` + "\n")
		if i%100 == 0 {
			content.WriteString("\n  \n") // blank lines do not count
		}
	}
	want := content.Bytes()
	wantLines := bytes.Count(want, []byte(`custom_id`))
	f, err := fs.Create(ctx, files.File{ID: "file-a", KeyID: "k1", Purpose: files.PurposeBatch, Filename: "a.jsonl"},
		bytes.NewReader(want), files.Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Bytes != int64(len(want)) || f.Lines != wantLines {
		t.Fatalf("stored %d bytes, %d lines; want %d, %d", f.Bytes, f.Lines, len(want), wantLines)
	}
	var got bytes.Buffer
	if _, err := fs.WriteTo(ctx, &got, f.ID); err != nil || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("WriteTo: %d bytes, err %v; want the %d stored", got.Len(), err, len(want))
	}
	rd, err := io.ReadAll(fs.Reader(ctx, f.ID))
	if err != nil || !bytes.Equal(rd, want) {
		t.Fatalf("Reader: %d bytes, err %v", len(rd), err)
	}
	if _, err := fs.Get(ctx, "k2", f.ID); !errors.Is(err, files.ErrNotFound) {
		t.Errorf("another key's Get: %v, want ErrNotFound", err)
	}
	if err := fs.Delete(ctx, "k2", f.ID); !errors.Is(err, files.ErrNotFound) {
		t.Errorf("another key's Delete: %v, want ErrNotFound", err)
	}

	for _, tt := range []struct {
		name    string
		content string
		lim     files.Limits
		want    error
	}{
		{"too many lines", "{}\n{}\n{}\n", files.Limits{MaxLines: 2}, files.ErrTooManyLines},
		{"last line unterminated", "{}\n{}\n{}", files.Limits{MaxLines: 2}, files.ErrTooManyLines},
		{"too large", strings.Repeat("x", 100), files.Limits{MaxBytes: 99}, files.ErrTooLarge},
		{"empty", "", files.Limits{}, files.ErrEmpty},
	} {
		_, err := fs.Create(ctx, files.File{ID: "file-bad", KeyID: "k1", Purpose: files.PurposeBatch}, strings.NewReader(tt.content),
			tt.lim, nil)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM file_chunks WHERE file_id = 'file-bad'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("refused files left %d chunks (err %v)", n, err)
	}
}

// lineGen yields n bytes of JSONL without holding them.
type lineGen struct{ left int }

func (g *lineGen) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	line := []byte(`{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}` + strings.Repeat(" ", 900) + "\n")
	n := 0
	for n+len(line) <= len(p) && g.left >= len(line) {
		n += copy(p[n:], line)
		g.left -= len(line)
	}
	if n == 0 {
		n = copy(p, line[:min(len(p), g.left)])
		g.left -= n
	}
	return n, nil
}

// TestUploadStreams_Issue12_1: storing a 40 MB file allocates a small fraction of it: the
// content is copied through one chunk buffer, never held whole.
func TestUploadStreams_Issue12_1(t *testing.T) {
	ctx := context.Background()
	db := storetest.New(t)
	fs := files.New(db.Pool)
	const size = 40 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, err := fs.Create(ctx, files.File{ID: "file-big", KeyID: "k", Purpose: files.PurposeBatch}, &lineGen{left: size},
		files.Limits{}, nil)
	runtime.ReadMemStats(&after)
	if err != nil || f.Bytes != size {
		t.Fatalf("stored %d bytes, err %v", f.Bytes, err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("storing %d MiB allocated %.1f MiB", size>>20, float64(alloc)/(1<<20))
	if alloc > size/4 {
		t.Errorf("storing %d MiB allocated %.1f MiB: the upload is buffered, not streamed", size>>20, float64(alloc)/(1<<20))
	}
}
