package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// The OpenAI Responses API (POST /v1/responses) end to end, with the official openai-go
// client, through the real stack to fake upstreams over real HTTP: an openai channel whose
// upstream has the Responses API (passed through), one whose upstream has only chat
// completions, an Anthropic channel and a Gemini channel (translated).

// responsesStack is a stack whose worker knows native as an upstream with the Responses
// API, and a client for it.
func responsesStack(t *testing.T, native *httptest.Server) (*stack, openai.Client, createdKey) {
	t.Helper()
	s := newStack(t, stackOpts{noWorker: true})
	if native != nil {
		u, err := url.Parse(native.URL)
		if err != nil {
			t.Fatal(err)
		}
		s.wcfg.ResponsesHosts = []string{u.Host}
	}
	s.ops, s.stopW = s.startWorker()
	k := s.newKey(nil)
	return s, openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0)), k
}

// streamOrder checks a Responses stream's event types against the order of a one-message
// answer, and its sequence numbers; it returns the joined text deltas and the final event.
func streamOrder(t *testing.T, events []responses.ResponseStreamEventUnion) (string, responses.ResponseStreamEventUnion) {
	t.Helper()
	var types []string
	var text strings.Builder
	for i, ev := range events {
		if ev.SequenceNumber != int64(i) {
			t.Errorf("event %d (%s) has sequence_number %d", i, ev.Type, ev.SequenceNumber)
		}
		if ev.Type == "response.output_text.delta" {
			text.WriteString(ev.Delta)
			if len(types) > 0 && types[len(types)-1] == ev.Type {
				continue // one or more deltas
			}
		}
		types = append(types, ev.Type)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added " +
		"response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("events:\n%s\nwant\n%s", got, want)
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	return text.String(), events[len(events)-1]
}

// TestResponsesSDK_Issue11: Responses.New and Responses.NewStreaming through Sluice to each
// kind of channel: the answer's text, status and usage, the stream's events in order with
// their sequence numbers, and the usage and cost in the ledger, charged once per job.
func TestResponsesSDK_Issue11(t *testing.T) {
	t.Parallel()
	_, chatSrv := providertest.Start(t, providertest.Config{})
	nativeUp, nativeSrv := providertest.Start(t, providertest.Config{})
	gemUp, err := providertest.New(providertest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	gemSrv := httptest.NewServer(http.HandlerFunc(gemUp.ServeGemini))
	t.Cleanup(func() { gemUp.Close(); gemSrv.Close() })

	s, client, _ := responsesStack(t, nativeSrv)
	s.channel(map[string]any{"name": "native", "provider": "openai", "base_url": nativeSrv.URL + "/v1", "models": []string{"gpt-native"}})
	s.channel(map[string]any{"name": "chat", "provider": "openai", "base_url": chatSrv.URL + "/v1", "models": []string{"gpt-chat"}})
	s.channel(map[string]any{"name": "claude", "provider": "anthropic", "base_url": chatSrv.URL, "api_key": "sk-ant-test-123456",
		"models": []string{"claude-x"}})
	s.channel(map[string]any{"name": "gemini", "provider": "gemini", "base_url": gemSrv.URL + "/v1beta", "api_key": "AIza-test-0123456789",
		"models": []string{"gemini-x"}})
	for _, m := range []string{"gpt-native", "gpt-chat", "claude-x", "gemini-x"} {
		s.price(m, 2, 8)
	}
	ctx := context.Background()
	const prompt, instructions = "tell me about sluice gates", "be brief"
	want, pt, ct := fakeAnswer(prompt)
	pt += int64(len(strings.Fields(instructions)) + 3) // the instructions are one more text

	for _, model := range []string{"gpt-native", "gpt-chat", "claude-x", "gemini-x"} {
		t.Run(model, func(t *testing.T) {
			params := responses.ResponseNewParams{Model: model, Instructions: openai.String(instructions),
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)}}
			var raw *http.Response
			resp, err := client.Responses.New(ctx, params, option.WithResponseInto(&raw))
			if err != nil {
				t.Fatalf("Responses.New: %v", err)
			}
			if resp.OutputText() != want || resp.Status != responses.ResponseStatusCompleted || !strings.HasPrefix(resp.ID, "resp_") ||
				resp.Usage.InputTokens != pt || resp.Usage.OutputTokens != ct || resp.Usage.TotalTokens != pt+ct {
				t.Errorf("response %s, want %q with usage %d/%d", resp.RawJSON(), want, pt, ct)
			}
			s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, ct, 2, 8)

			stream := client.Responses.NewStreaming(ctx, params, option.WithResponseInto(&raw))
			var events []responses.ResponseStreamEventUnion
			for stream.Next() {
				events = append(events, stream.Current())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			text, last := streamOrder(t, events)
			if text != want || last.Response.OutputText() != want || last.Response.Usage.InputTokens != pt ||
				last.Response.Usage.OutputTokens != ct || last.Response.Status != responses.ResponseStatusCompleted {
				t.Errorf("streamed %q, completed %s; want %q with usage %d/%d", text, last.Response.RawJSON(), want, pt, ct)
			}
			if raw.Header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("stream Content-Type %q", raw.Header.Get("Content-Type"))
			}
			s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, ct, 2, 8)
		})
	}
	if st := nativeUp.Stats(); st.Succeeded != 2 {
		t.Errorf("the native upstream answered %d calls at /v1/responses, want 2", st.Succeeded)
	}

	// Async, as every job: Prefer: respond-async, then the job holds the response object.
	key := s.newKey(nil).Key
	resp, b := s.do(http.MethodPost, "/v1/responses", key, map[string]any{"model": "claude-x", "input": prompt},
		"Prefer", "respond-async")
	var job jobObj
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &job) != nil || resp.Header.Get("Sluice-Job-Id") != job.ID {
		t.Fatalf("async /v1/responses = %d %s", resp.StatusCode, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for job.Status != "succeeded" && time.Now().Before(deadline) {
		_, job = s.job(key, job.ID, "?wait=10s")
	}
	var body struct {
		Object string `json:"object"`
		Output []struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"output"`
	}
	if job.Status != "succeeded" || job.Response == nil || json.Unmarshal(job.Response.Body, &body) != nil ||
		body.Object != "response" || len(body.Output) != 1 || body.Output[0].Content[0].Text != want {
		t.Fatalf("async job = %+v", job)
	}
	s.checkLedger(job.ID, int64(len(strings.Fields(prompt))+3), ct, 2, 8)
}
