package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestMessageBatches_Issue12_3: Anthropic Message Batches with the official SDK, on an
// Anthropic channel and an OpenAI one (translated): create, retrieve (live counts), list,
// results (JSONL), cancel of an ended batch, delete; a bad request is refused at create;
// another key gets 404.
func TestMessageBatches_Issue12_3(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 16})
	up, srv := providertest.Start(t, providertest.Config{Latency: 5 * time.Millisecond})
	s.channel(map[string]any{"name": "claude", "provider": "anthropic", "base_url": srv.URL, "api_key": "sk-ant-test-123456",
		"models": []string{"claude-x"}})
	s.channel(map[string]any{"name": "gpt", "provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"gpt-x"}})
	k, other := s.newKey(nil), s.newKey(nil)
	ctx := context.Background()
	c := anthropic.NewClient(aoption.WithBaseURL(s.base), aoption.WithAPIKey(k.Key), aoption.WithMaxRetries(0))
	oc := anthropic.NewClient(aoption.WithBaseURL(s.base), aoption.WithAPIKey(other.Key), aoption.WithMaxRetries(0))
	const n = 60
	var reqs []anthropic.MessageBatchNewParamsRequest
	for i := range n {
		model := []string{"claude-x", "gpt-x"}[i%2]
		reqs = append(reqs, anthropic.MessageBatchNewParamsRequest{CustomID: fmt.Sprintf("r%d", i),
			Params: anthropic.MessageBatchNewParamsRequestParams{MaxTokens: 64, Model: anthropic.Model(model),
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(fmt.Sprintf("line %d", i)))}}})
	}
	b, err := c.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{Requests: reqs})
	if err != nil {
		t.Fatal(err)
	}
	if b.ProcessingStatus != "in_progress" || b.RequestCounts.Processing != n {
		t.Errorf("created: %s, counts %+v", b.ProcessingStatus, b.RequestCounts)
	}
	if _, err := oc.Messages.Batches.Get(ctx, b.ID, anthropic.MessageBatchGetParams{}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("another key's Get: %v, want 404", err)
	}
	eventually(t, 60*time.Second, "the batch to end", func() bool {
		b, err = c.Messages.Batches.Get(ctx, b.ID, anthropic.MessageBatchGetParams{})
		return err == nil && b.ProcessingStatus == "ended"
	})
	if b.RequestCounts.Succeeded != n || b.RequestCounts.Processing != 0 || b.ResultsURL == "" || b.EndedAt.IsZero() {
		t.Errorf("ended batch %+v", b)
	}
	stream := c.Messages.Batches.ResultsStreaming(ctx, b.ID, anthropic.MessageBatchResultsParams{})
	seen := map[string]bool{}
	for stream.Next() {
		r := stream.Current()
		if r.Result.Type != "succeeded" || len(r.Result.Message.Content) == 0 || r.Result.Message.Content[0].Text == "" {
			t.Errorf("result %s: %s", r.CustomID, r.RawJSON())
		}
		seen[r.CustomID] = true
	}
	if err := stream.Err(); err != nil || len(seen) != n {
		t.Errorf("results: %d distinct, err %v", len(seen), err)
	}
	page, err := c.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{})
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != b.ID {
		t.Errorf("list: %v, %+v", err, page)
	}
	if st := up.Stats(); st.Succeeded != n {
		t.Errorf("upstream answered %d, want %d", st.Succeeded, n)
	}
	var rows int
	if err := s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger WHERE key_id = $1`, k.ID).Scan(&rows); err != nil || rows != n {
		t.Errorf("%d ledger rows (err %v), want %d", rows, err, n)
	}
	if _, err := oc.Messages.Batches.Delete(ctx, b.ID, anthropic.MessageBatchDeleteParams{}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("another key's Delete: %v, want 404", err)
	}
	if d, err := c.Messages.Batches.Delete(ctx, b.ID, anthropic.MessageBatchDeleteParams{}); err != nil || d.ID != b.ID {
		t.Errorf("delete: %v %+v", err, d)
	}
	if _, err := c.Messages.Batches.Get(ctx, b.ID, anthropic.MessageBatchGetParams{}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("Get after delete: %v, want 404", err)
	}

	// A request for a model no channel serves is refused at create, in Anthropic's shape.
	bad := []anthropic.MessageBatchNewParamsRequest{reqs[0], {CustomID: "bad", Params: anthropic.MessageBatchNewParamsRequestParams{
		MaxTokens: 8, Model: "nope", Messages: reqs[0].Params.Messages}}}
	if _, err := c.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{Requests: bad}); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("bad model: %v, want 400", err)
	}
	resp, body := s.do(http.MethodPost, "/v1/messages/batches", k.Key, `{"requests":[{"custom_id":"a","params":{"model":"claude-x"}}]}`)
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"type":"error"`) {
		t.Errorf("no messages: %d %s", resp.StatusCode, body)
	}
}

func isStatus(err error, code int) bool {
	var e *anthropic.Error
	return asError(err, &e) && e.StatusCode == code
}
