package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestAnthropicSDK drives /v1/messages with the official Anthropic Go SDK against an
// Anthropic upstream (native) and an OpenAI upstream (translated), stream and not; and
// /v1/chat/completions with the OpenAI SDK against the Anthropic upstream.
func TestAnthropicSDK(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"name": "claude", "provider": "anthropic", "base_url": srv.URL, "api_key": "sk-ant-test-123456",
		"models": []string{"claude-x"}})
	s.channel(map[string]any{"name": "gpt", "provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"gpt-x"}})
	s.price("claude-x", 3, 15)
	k := s.newKey(nil)
	ctx := context.Background()
	client := anthropic.NewClient(aoption.WithBaseURL(s.base), aoption.WithAPIKey(k.Key), aoption.WithMaxRetries(0))
	prompt := "tell me about sluice gates"
	want, pt, ct := fakeAnswer(prompt)
	for _, model := range []string{"claude-x", "gpt-x"} {
		t.Run(model, func(t *testing.T) {
			params := anthropic.MessageNewParams{MaxTokens: 256, Model: anthropic.Model(model),
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))}}
			msg, err := client.Messages.New(ctx, params)
			if err != nil {
				t.Fatalf("Messages.New: %v", err)
			}
			if len(msg.Content) != 1 || msg.Content[0].Text != want || msg.Usage.InputTokens != pt || msg.Usage.OutputTokens != ct {
				t.Errorf("message %+v, want %q with usage %d/%d", msg, want, pt, ct)
			}
			stream := client.Messages.NewStreaming(ctx, params)
			var acc anthropic.Message
			for stream.Next() {
				if err := acc.Accumulate(stream.Current()); err != nil {
					t.Fatal(err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if len(acc.Content) != 1 || acc.Content[0].Text != want || acc.Usage.OutputTokens != ct {
				t.Errorf("streamed message %+v, want %q", acc, want)
			}
		})
	}
	// OpenAI SDK → Anthropic upstream, translated.
	oc := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0))
	comp, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "claude-x",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage(prompt)}})
	if err != nil {
		t.Fatalf("chat via anthropic: %v", err)
	}
	if comp.Choices[0].Message.Content != want || comp.Usage.CompletionTokens != ct {
		t.Errorf("chat via anthropic = %q usage %d, want %q %d", comp.Choices[0].Message.Content, comp.Usage.CompletionTokens, want, ct)
	}
	if up.Stats().Succeeded < 5 {
		t.Errorf("upstream answered %d times, want ≥ 5", up.Stats().Succeeded)
	}
	// Errors on /v1/messages have Anthropic's shape.
	resp, b := s.do(http.MethodPost, "/v1/messages", "sk-sl-bad", `{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 401 || !strings.Contains(string(b), `"type":"error"`) || !strings.Contains(string(b), `"authentication_error"`) {
		t.Errorf("bad key on /v1/messages = %d %s, want Anthropic's error shape", resp.StatusCode, b)
	}
	// x-api-key is accepted.
	resp, b = s.do(http.MethodPost, "/v1/messages", "", `{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`,
		"x-api-key", k.Key)
	if resp.StatusCode != 200 {
		t.Errorf("x-api-key auth = %d %s", resp.StatusCode, b)
	}
}
