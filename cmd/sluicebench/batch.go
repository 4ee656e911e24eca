package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"sync"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// batchResult is the batch section: a large batch uploaded and drained while sync callers
// run at c=16, against the same sync load without it.
type batchResult struct {
	Lines       int     `json:"lines"`
	FileBytes   int64   `json:"file_bytes"`
	UploadSecs  float64 `json:"upload_s"`
	DrainSecs   float64 `json:"drain_s"` // from the batch's creation to completed
	LinesPerSec float64 `json:"lines_per_s"`
	Completed   int     `json:"completed"`
	Failed      int     `json:"failed"`
	Status      string  `json:"status"`
	// RSS of each process at rest before the upload, and its most while uploading and draining.
	IngressRSSBefore float64 `json:"ingress_rss_before"`
	IngressRSSMax    float64 `json:"ingress_rss_max"`
	WorkerRSSBefore  float64 `json:"worker_rss_before"`
	WorkerRSSMax     float64 `json:"worker_rss_max"`
	// SyncAlone and SyncDuring are the c=16 sync load without and during the drain.
	SyncAlone  loadResult `json:"sync_alone"`
	SyncDuring loadResult `json:"sync_during"`
	Err        string     `json:"error,omitempty"`
}

// batchSection measures the sync load alone, uploads a cfg.batchLines-line batch (generated
// as it is sent, never whole in memory here either), creates it, runs the same sync load
// while it drains, and waits for it to complete, sampling both processes' RSS throughout.
func (s *stack) batchSection(ctx context.Context) (res batchResult) {
	res.Lines = s.cfg.batchLines
	syncLoad := load{req: s.sluiceReq(false), conc: 16, warmup: s.cfg.warmup, dur: s.cfg.duration, h2c: s.cfg.h2c}
	logf("batch: sync c=16 without a batch (%s)", s.cfg.duration)
	res.SyncAlone = syncLoad.run(ctx)
	ing, _ := scrape(ctx, s.http, "http://"+s.ingAddr)
	wrk, _ := scrape(ctx, s.http, "http://"+s.wrkAddr)
	res.IngressRSSBefore, res.WorkerRSSBefore = ing.RSS, wrk.RSS

	sctx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	var maxIng, maxWrk float64
	sampler.Go(func() {
		for sctx.Err() == nil {
			if p, err := scrape(sctx, s.http, "http://"+s.ingAddr); err == nil {
				maxIng = max(maxIng, p.RSS)
			}
			if p, err := scrape(sctx, s.http, "http://"+s.wrkAddr); err == nil {
				maxWrk = max(maxWrk, p.RSS)
			}
			wait(sctx, 200*time.Millisecond)
		}
	})
	defer func() {
		stopSampling()
		sampler.Wait()
		res.IngressRSSMax, res.WorkerRSSMax = maxIng, maxWrk
	}()

	logf("batch: uploading %d lines", s.cfg.batchLines)
	t0 := time.Now()
	fileID, n, err := s.uploadBatchFile(ctx, s.cfg.batchLines)
	res.UploadSecs, res.FileBytes = time.Since(t0).Seconds(), n
	if err != nil {
		res.Err = err.Error()
		return res
	}
	var b struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Counts struct {
			Total, Completed, Failed int
		} `json:"request_counts"`
	}
	began := time.Now()
	if err := s.apiCall(ctx, http.MethodPost, "/v1/batches", map[string]any{"input_file_id": fileID,
		"endpoint": "/v1/chat/completions", "completion_window": "24h"}, &b); err != nil {
		res.Err = err.Error()
		return res
	}
	poll := func() error { return s.apiCall(ctx, http.MethodGet, "/v1/batches/"+b.ID, nil, &b) }
	for ctx.Err() == nil && b.Counts.Completed == 0 && b.Status != "failed" {
		wait(ctx, 100*time.Millisecond)
		_ = poll()
	}
	logf("batch: %s in progress; sync c=16 during the drain (%s)", b.ID, s.cfg.duration)
	res.SyncDuring = syncLoad.run(ctx)
	deadline := time.Now().Add(s.cfg.drainTimeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if poll() == nil && (b.Status == "completed" || b.Status == "failed" || b.Status == "expired") {
			break
		}
		wait(ctx, 200*time.Millisecond)
	}
	res.DrainSecs = time.Since(began).Seconds()
	res.Status, res.Completed, res.Failed = b.Status, b.Counts.Completed, b.Counts.Failed
	if b.Status == "completed" {
		res.LinesPerSec = float64(b.Counts.Total) / res.DrainSecs
	}
	logf("batch: %s after %.1fs (%.0f lines/s), %d completed, %d failed", b.Status, res.DrainSecs, res.LinesPerSec,
		res.Completed, res.Failed)
	return res
}

// uploadBatchFile streams an n-line batch file to POST /v1/files; it returns the file id
// and the bytes sent.
func (s *stack) uploadBatchFile(ctx context.Context, n int) (string, int64, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var sent int64
	var gen sync.WaitGroup
	gen.Go(func() {
		err := func() error {
			if err := mw.WriteField("purpose", "batch"); err != nil {
				return err
			}
			fw, err := mw.CreateFormFile("file", "bench.jsonl")
			if err != nil {
				return err
			}
			for i := range n {
				line, _ := json.Marshal(map[string]any{"custom_id": fmt.Sprintf("l%d", i), "method": "POST",
					"url": "/v1/chat/completions", "body": json.RawMessage(chatBody(fastModel, false, false))})
				k, err := fw.Write(append(line, '\n'))
				sent += int64(k)
				if err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	})
	defer gen.Wait()
	defer pr.Close() // unblocks the generator if the request ended early
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.ingAddr+"/v1/files", pr)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+s.asyncKey)
	c := &http.Client{Timeout: 10 * time.Minute}
	resp, err := c.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return "", 0, fmt.Errorf("upload: %w", err)
	}
	defer httpbody.Close(resp)
	var f struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&f); err != nil || resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("upload: status %d (%v)", resp.StatusCode, err)
	}
	gen.Wait()
	return f.ID, sent, nil
}

// apiCall sends a JSON request with the async key and decodes a 200 answer into out.
func (s *stack) apiCall(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+s.ingAddr+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.asyncKey)
	resp, err := s.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return err
	}
	defer httpbody.Close(resp)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out)
}

// batchMarkdown prints the batch section.
func (r *report) batchMarkdown(w io.Writer) {
	b := r.Batch
	if b == nil {
		return
	}
	fmt.Fprintf(w, "### Batch: %d lines (fake upstream 0 ms, WORKER_BATCH_SHARE default)\n\n", b.Lines)
	if b.Err != "" {
		fmt.Fprintf(w, "The batch section failed: %s\n\n", b.Err)
		return
	}
	table(w, []string{"", ""}, [][]string{
		{"upload", fmt.Sprintf("%.1f MiB in %.2f s", float64(b.FileBytes)/(1<<20), b.UploadSecs)},
		{"drain (create → completed)", fmt.Sprintf("%.1f s, **%.0f lines/s**; %s, %d completed, %d failed", b.DrainSecs,
			b.LinesPerSec, b.Status, b.Completed, b.Failed)},
		{"ingress RSS before / most while uploading and draining", fmt.Sprintf("%.1f / %.1f MiB", b.IngressRSSBefore/(1<<20), b.IngressRSSMax/(1<<20))},
		{"worker RSS before / most while draining", fmt.Sprintf("%.1f / %.1f MiB", b.WorkerRSSBefore/(1<<20), b.WorkerRSSMax/(1<<20))},
	})
	table(w, []string{"sync c=16 through Sluice", "req/s", "p50 ms", "p99 ms", "errors"}, [][]string{
		{"without a batch", f0(b.SyncAlone.Rate), f3(b.SyncAlone.Latency.P50), f3(b.SyncAlone.Latency.P99), errCell(b.SyncAlone)},
		{"during the drain", f0(b.SyncDuring.Rate), f3(b.SyncDuring.Latency.P50), f3(b.SyncDuring.Latency.P99),
			errCell(b.SyncDuring)},
	})
}
