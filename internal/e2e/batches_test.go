package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/internal/worker"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// batchInput is an n-line chat batch input file for model.
func batchInput(n int, model string) []byte {
	var b bytes.Buffer
	for i := range n {
		line, _ := json.Marshal(map[string]any{"custom_id": fmt.Sprintf("req-%d", i), "method": "POST",
			"url": "/v1/chat/completions", "body": chatBody(model, fmt.Sprintf("batch line %d", i))})
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// outLine is a line of an output or error file.
type outLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// download reads a file's lines through the SDK; none for an empty id.
func download(t *testing.T, c openai.Client, id string) []outLine {
	t.Helper()
	if id == "" {
		return nil
	}
	resp, err := c.Files.Content(context.Background(), id)
	if err != nil {
		t.Fatalf("download %s: %v", id, err)
	}
	defer resp.Body.Close()
	var ls []outLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		var l outLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("file %s: line %q: %v", id, sc.Text(), err)
		}
		ls = append(ls, l)
	}
	return ls
}

// waitBatch polls a batch until cond holds.
func waitBatch(t *testing.T, c openai.Client, id string, d time.Duration, what string, cond func(*openai.Batch) bool) *openai.Batch {
	t.Helper()
	var b *openai.Batch
	deadline := time.Now().Add(d)
	for {
		var err error
		b, err = c.Batches.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("get batch: %v", err)
		}
		if cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; the batch: %s", d, what, b.RawJSON())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBatchOpenAI_Issue12_2: a 1,000-line batch through the official SDK on a faulty fake
// upstream: upload, create, poll (live counts), download output and error files; exact
// request_counts, one output line per input line, the ledger equal to the upstream's usage;
// another key gets 404; a bad file fails validation with OpenAI's errors list.
func TestBatchOpenAI_Issue12_2(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 64, tune: func(c *worker.PoolConfig) { c.BatchShare = 0.5 }})
	up, srv := providertest.Start(t, providertest.Config{Mix: "ok=86,500=4,502=3,reset=3,400=4", Seed: 12,
		Latency: 2 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 2, 4)
	key, other := s.newKey(nil), s.newKey(nil)
	c := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(key.Key), option.WithMaxRetries(0))
	oc := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(other.Key), option.WithMaxRetries(0))
	ctx := context.Background()

	const n = 1000
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(batchInput(n, "m")), "in.jsonl",
		"application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != "validating" || !strings.HasPrefix(b.ID, "batch_") {
		t.Errorf("created batch %s in status %s", b.ID, b.Status)
	}
	for _, call := range []func() error{
		func() error { _, err := oc.Batches.Get(ctx, b.ID); return err },
		func() error { _, err := oc.Batches.Cancel(ctx, b.ID); return err },
		func() error { _, err := oc.Files.Get(ctx, f.ID); return err },
	} {
		var apiErr *openai.Error
		if err := call(); !asError(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
			t.Errorf("another key: %v, want a 404", err)
		}
	}
	mid := waitBatch(t, c, b.ID, 60*time.Second, "lines under way", func(b *openai.Batch) bool {
		return b.Status == "in_progress" && b.RequestCounts.Completed > 0
	})
	if mid.RequestCounts.Total != n {
		t.Errorf("in progress: total %d, want %d", mid.RequestCounts.Total, n)
	}
	done := waitBatch(t, c, b.ID, 120*time.Second, "the batch to complete", func(b *openai.Batch) bool { return b.Status == "completed" })
	rc := done.RequestCounts
	outs, errs := download(t, c, done.OutputFileID), download(t, c, done.ErrorFileID)
	if rc.Total != n || rc.Completed+rc.Failed != n || int(rc.Completed) != len(outs) || int(rc.Failed) != len(errs) {
		t.Errorf("request_counts %+v; output %d lines, error %d lines; want %d in all", rc, len(outs), len(errs), n)
	}
	seen := map[string]bool{}
	for _, l := range append(outs, errs...) {
		if seen[l.CustomID] || !strings.HasPrefix(l.CustomID, "req-") || l.Response == nil || l.Response.RequestID == "" {
			t.Errorf("bad or repeated line %+v", l)
		}
		seen[l.CustomID] = true
	}
	for _, l := range outs {
		if l.Response.StatusCode != 200 || !bytes.Contains(l.Response.Body, []byte(`"choices"`)) {
			t.Errorf("output line %s: %d %s", l.CustomID, l.Response.StatusCode, l.Response.Body)
		}
	}
	for _, l := range errs {
		if l.Response.StatusCode < 400 || !bytes.Contains(l.Response.Body, []byte(`"error"`)) {
			t.Errorf("error line %s: %d %s", l.CustomID, l.Response.StatusCode, l.Response.Body)
		}
	}
	if len(errs) == 0 || len(outs) < n/2 {
		t.Errorf("%d output and %d error lines: the fault mix should give both", len(outs), len(errs))
	}
	st := up.Stats()
	var ledgerTokens, ledgerRows int64
	if err := s.db.Pool.QueryRow(ctx, `SELECT COALESCE(sum(prompt_tokens + completion_tokens), 0), count(*)
		FROM usage_ledger WHERE key_id = $1`, key.ID).Scan(&ledgerTokens, &ledgerRows); err != nil {
		t.Fatal(err)
	}
	if ledgerTokens != st.PromptTokens+st.CompletionTokens || ledgerRows != int64(len(outs)) || st.Succeeded != int64(len(outs)) {
		t.Errorf("ledger %d tokens in %d rows; upstream %d tokens in %d answers; %d output lines",
			ledgerTokens, ledgerRows, st.PromptTokens+st.CompletionTokens, st.Succeeded, len(outs))
	}
	checkCharges(t, s, up)
	if _, err := oc.Files.Content(ctx, done.OutputFileID); err == nil {
		t.Error("another key downloaded the output file")
	}

	// A file with bad lines fails validation with OpenAI's errors list, and runs nothing.
	bad := string(batchInput(2, "m")) + `{"custom_id":"req-0","method":"POST","url":"/v1/chat/completions","body":` +
		`{"model":"m","messages":[{"role":"user","content":"x"}]}}` + "\n" + `not json` + "\n" +
		`{"custom_id":"x","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x"}}` + "\n" +
		`{"custom_id":"y","method":"POST","url":"/v1/chat/completions","body":{"model":"nope","messages":[{"role":"user","content":"x"}]}}` + "\n" +
		`{"method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}` + "\n"
	bf, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(bad), "bad.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: bf.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	failed := waitBatch(t, c, bb.ID, 30*time.Second, "validation to fail", func(b *openai.Batch) bool { return b.Status == "failed" })
	var codes []string
	for _, e := range failed.Errors.Data {
		codes = append(codes, fmt.Sprintf("%d:%s", e.Line, e.Code))
	}
	if got, want := strings.Join(codes, " "), "3:duplicate_custom_id 4:invalid_json_line 5:mismatched_url 6:model_not_found 7:missing_required_parameter"; got != want {
		t.Errorf("validation errors %q, want %q", got, want)
	}
	if up.Stats().Succeeded != st.Succeeded {
		t.Error("a batch that failed validation called upstream")
	}
	resp, body := s.do(http.MethodPost, "/v1/batches", key.Key, map[string]any{"input_file_id": f.ID, "endpoint": "/v1/x",
		"completion_window": "24h"})
	if resp.StatusCode != 400 || !strings.Contains(string(body), "endpoint") {
		t.Errorf("bad endpoint: %d %s", resp.StatusCode, body)
	}
	resp, body = s.do(http.MethodPost, "/v1/batches", other.Key, map[string]any{"input_file_id": f.ID,
		"endpoint": "/v1/chat/completions", "completion_window": "24h"})
	if resp.StatusCode != 400 {
		t.Errorf("another key's input file: %d %s", resp.StatusCode, body)
	}
	_, _ = io.Discard.Write(body)
}
