package batches

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/store"
)

// linesPage is how many line rows one query of the output writer reads.
const linesPage = 1000

// finalize writes b's output file (the lines that succeeded) and error file (the others),
// in line order, each streamed from the line rows into the file store, then ends b with
// status final. It is idempotent: a runner that dies here leaves the batch finalizing (or
// cancelling, or past its expiry), and the next one writes the files again under the same ids.
func (r *Runner) finalize(ctx context.Context, log *slog.Logger, b *batches.Batch, final string) error {
	outID, errID := outputFileID(b.ID, "out"), outputFileID(b.ID, "err")
	var outFile, errFile *string
	g, gctx := errgroup.WithContext(ctx)
	write := func(id string, ok bool, dst **string) {
		g.Go(func() error {
			pr, pw := io.Pipe()
			var wg errgroup.Group
			wg.Go(func() error {
				err := r.writeLines(gctx, pw, b, ok)
				pw.CloseWithError(err)
				return err
			})
			_, err := r.files.Create(gctx, files.File{ID: id, KeyID: b.KeyID, Purpose: files.PurposeBatchOutput,
				Filename: fmt.Sprintf("%s_%s.jsonl", b.ID, map[bool]string{true: "output", false: "error"}[ok])}, pr,
				files.Limits{MaxBytes: 1 << 40, MaxLines: files.MaxLines * 2}, nil)
			_ = pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if Create stopped early
			werr := wg.Wait()
			switch {
			case errors.Is(err, files.ErrEmpty):
				return werr // no such lines: no file
			case err != nil:
				return err
			case werr != nil:
				return werr
			}
			*dst = &id
			return nil
		})
	}
	write(outID, true, &outFile)
	write(errID, false, &errFile)
	if err := g.Wait(); err != nil {
		return fmt.Errorf("write output files: %w", err)
	}
	c, err := r.db.LineCounts(ctx, b.ID)
	if err != nil {
		return err
	}
	ended, err := r.db.Finish(ctx, b, final, time.Now(), outFile, errFile, c)
	if err != nil || !ended {
		return err
	}
	log.InfoContext(ctx, "batch ended", "status", final, "lines", c.Done, "succeeded", c.Succeeded)
	r.ended(ctx, b)
	return nil
}

// outputFileID is the id of one of batch id's output files: fixed, so a rewrite replaces it.
func outputFileID(batchID, which string) string {
	return "file-" + strings.TrimPrefix(batchID, "batch_") + which
}

// writeLines writes b's lines that succeeded (ok) or did not (!ok) to w, in OpenAI's output
// format. Lines whose rows hold no custom_id (ended without running) take it from the input
// file, read alongside.
func (r *Runner) writeLines(ctx context.Context, w io.Writer, b *batches.Batch, ok bool) error {
	var in *lineScanner
	customID := func(n int) string {
		if in == nil {
			in = newLineScanner(r.files.Reader(ctx, b.InputFileID), r.cfg.MaxLine)
		}
		for in.n <= n && in.next() {
		}
		if in.n != n+1 || in.long {
			return ""
		}
		var l inputLine
		if json.Unmarshal(in.line, &l) != nil || l.CustomID == nil {
			return ""
		}
		return *l.CustomID
	}
	enc := json.NewEncoder(w)
	for from := 0; ; {
		ls, err := r.db.Lines(ctx, b.ID, from, linesPage)
		if err != nil {
			return err
		}
		for i := range ls {
			l := &ls[i]
			if (l.Status == store.StatusSucceeded) != ok {
				continue
			}
			cid := ""
			if l.CustomID != nil {
				cid = *l.CustomID
			} else {
				cid = customID(l.N)
			}
			if err := enc.Encode(outputLine(b, l, cid)); err != nil {
				return err
			}
		}
		if len(ls) < linesPage {
			return nil
		}
		from = ls[len(ls)-1].N + 1
	}
}

// openAILine is one line of an OpenAI batch output or error file.
type openAILine struct {
	ID       string          `json:"id"`
	CustomID string          `json:"custom_id"`
	Response *openAIResponse `json:"response"`
	Error    *lineFault      `json:"error"`
}

type openAIResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

type lineFault struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// outputLine renders line l: a response (the upstream's answer, or its error as the body,
// with its status) or, for a line that never ran, an error.
func outputLine(b *batches.Batch, l *batches.Line, customID string) any {
	if b.Kind == batches.KindAnthropic {
		return anthropicLine(l, customID)
	}
	out := openAILine{ID: "batch_req_" + strings.TrimPrefix(l.JobID, "job_"), CustomID: customID}
	code := 0
	if l.StatusCode != nil {
		code = *l.StatusCode
	}
	if l.Status == store.StatusSucceeded {
		out.Response = &openAIResponse{StatusCode: code, RequestID: l.JobID, Body: l.Response}
		return out
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type"`
		Param   string `json:"param,omitempty"`
	}
	_ = json.Unmarshal(l.Error, &e)
	if e.Code == codeExpired || e.Code == codeCancelled {
		out.Error = &lineFault{Code: e.Code, Message: e.Message}
		return out
	}
	if code < 400 || code > 599 {
		code = 500
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": e.Message, "type": e.Type,
		"param": nilIfEmpty(e.Param), "code": nilIfEmpty(e.Code)}})
	out.Response = &openAIResponse{StatusCode: code, RequestID: l.JobID, Body: body}
	return out
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// anthropicLine renders line l as a line of Anthropic's batch results.
func anthropicLine(l *batches.Line, customID string) any {
	type result struct {
		Type    string          `json:"type"`
		Message json.RawMessage `json:"message,omitempty"`
		Error   any             `json:"error,omitempty"`
	}
	res := result{}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type"`
	}
	_ = json.Unmarshal(l.Error, &e)
	switch {
	case l.Status == store.StatusSucceeded:
		res.Type, res.Message = "succeeded", l.Response
	case e.Code == codeExpired:
		res.Type = "expired"
	case e.Code == codeCancelled || l.Status == store.StatusCanceled:
		res.Type = "canceled"
	default:
		res.Type = "errored"
		res.Error = map[string]any{"type": "error", "error": map[string]string{"type": "api_error", "message": e.Message}}
	}
	return map[string]any{"custom_id": customID, "result": res}
}
