package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestBatchWebhooks_Issue12_4: a batch with a webhook URL gets one signed event when it
// ends: batch.completed, batch.failed (validation), batch.cancelled, with the batch object
// as its data.
func TestBatchWebhooks_Issue12_4(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 8, hookRetry: 20 * time.Millisecond})
	_, srv := providertest.Start(t, providertest.Config{Latency: 50 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	key := s.newKey(nil)
	type event struct {
		ID, Object, Type string
		Data             struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Counts struct {
				Total, Completed, Failed int
			} `json:"request_counts"`
		}
	}
	var mu sync.Mutex
	got := map[string][]event{} // batch id → events
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		checkSignature(t, r.Header.Get("Sluice-Signature"), body, key.WebhookSecret)
		var e event
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		mu.Lock()
		got[e.Data.ID] = append(got[e.Data.ID], e)
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)
	c := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(key.Key), option.WithMaxRetries(0))
	ctx := context.Background()
	create := func(content string) string {
		f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(content), "in.jsonl", "application/jsonl"),
			Purpose: openai.FilePurposeBatch})
		if err != nil {
			t.Fatal(err)
		}
		resp, body := s.do(http.MethodPost, "/v1/batches", key.Key, map[string]any{"input_file_id": f.ID,
			"endpoint": "/v1/chat/completions", "completion_window": "24h", "webhook": map[string]any{"url": recv.URL}})
		var b struct{ ID string }
		if resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil {
			t.Fatalf("create batch: %d %s", resp.StatusCode, body)
		}
		return b.ID
	}
	completed := create(string(batchInput(5, "m")))
	failed := create(`not json` + "\n")
	cancelled := create(string(batchInput(200, "m")))
	waitBatch(t, c, cancelled, 30*time.Second, "lines under way", func(b *openai.Batch) bool { return b.RequestCounts.Completed > 0 })
	if _, err := c.Batches.Cancel(ctx, cancelled); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{completed: "batch.completed", failed: "batch.failed", cancelled: "batch.cancelled"}
	eventually(t, 60*time.Second, "three events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	for id, typ := range want {
		es := got[id]
		if len(es) != 1 || es[0].Type != typ || es[0].Object != "event" || es[0].Data.Status != strings.TrimPrefix(typ, "batch.") {
			t.Errorf("batch %s: events %+v, want one %s", id, es, typ)
		}
	}
	if e := got[completed]; len(e) == 1 && (e[0].Data.Counts.Total != 5 || e[0].Data.Counts.Completed != 5) {
		t.Errorf("completed event counts %+v", e[0].Data.Counts)
	}
	resp, body := s.do(http.MethodGet, "/v1/jobs", key.Key, nil)
	if resp.StatusCode != 200 || strings.Contains(string(body), strings.TrimPrefix(completed, "batch_")) {
		t.Errorf("the jobs list shows batch lines or events: %s", body)
	}
}

// TestBatchResponses_Issue12_2: a batch of /v1/responses lines runs on a chat channel
// (translated), one output line per input line.
func TestBatchResponses_Issue12_2(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 8})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "anthropic", "base_url": srv.URL, "api_key": "sk-ant-test-123456", "models": []string{"m"}})
	key := s.newKey(nil)
	c := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(key.Key), option.WithMaxRetries(0))
	ctx := context.Background()
	var in strings.Builder
	for i := range 4 {
		in.WriteString(`{"custom_id":"r` + string(rune('0'+i)) + `","method":"POST","url":"/v1/responses","body":{"model":"m","input":"hello"}}` + "\n")
	}
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(in.String()), "in.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Responses,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	end := waitBatch(t, c, b.ID, 60*time.Second, "the batch to end", func(b *openai.Batch) bool {
		return b.Status == "completed" || b.Status == "failed"
	})
	if end.Status != "completed" {
		t.Fatalf("batch %s: %s", end.Status, end.RawJSON())
	}
	outs := download(t, c, end.OutputFileID)
	if len(outs) != 4 || end.RequestCounts.Completed != 4 {
		t.Fatalf("%d output lines, counts %+v", len(outs), end.RequestCounts)
	}
	for _, l := range outs {
		if !strings.Contains(string(l.Response.Body), `"object":"response"`) {
			t.Errorf("line %s: %s", l.CustomID, l.Response.Body)
		}
	}
}
