package providers_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
)

// benchSSE is an OpenAI chat completion stream of n content chunks, then the usage chunk
// and [DONE], as api.openai.com sends it.
func benchSSE(n int) []byte {
	var b bytes.Buffer
	const head = `{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764140000,"model":"gpt-4o-mini",` +
		`"system_fingerprint":"fp_bench","choices":[{"index":0,"delta":{`
	fmt.Fprintf(&b, "data: %s\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n", head)
	for i := range n {
		fmt.Fprintf(&b, "data: %s\"content\":\"word%d \"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n", head, i)
	}
	fmt.Fprintf(&b, "data: %s},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n", head)
	b.WriteString(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764140000,"model":"gpt-4o-mini",` +
		`"choices":[],"usage":{"prompt_tokens":31,"completion_tokens":` + fmt.Sprint(n) + `,"total_tokens":` + fmt.Sprint(31+n) + "}}\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// memoryTransport answers every request with body, without a network: what is left to
// measure is the adapter itself (request building, SSE reading, chunk parsing, emit).
type memoryTransport struct{ body []byte }

func (m memoryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(bytes.NewReader(m.body)), ContentLength: -1, Request: req}, nil
}

// BenchmarkOpenAIStream runs one streamed chat completion per iteration through the OpenAI
// adapter: "memory" reads the stream from memory (the SSE parsing path alone), "loopback"
// from an httptest server over TCP (adds net/http on both sides). Throughput is SSE bytes.
func BenchmarkOpenAIStream(b *testing.B) {
	reqBody := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	for _, chunks := range []int{20, 200} {
		sse := benchSSE(chunks)
		for _, via := range []string{"memory", "loopback"} {
			b.Run(fmt.Sprintf("%s/chunks=%d", via, chunks), func(b *testing.B) {
				client := &http.Client{Transport: memoryTransport{body: sse}}
				base := "http://upstream.invalid/v1"
				if via == "loopback" {
					srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						_, _ = io.Copy(io.Discard, r.Body)
						w.Header().Set("Content-Type", "text/event-stream")
						_, _ = w.Write(sse)
					}))
					tr := &http.Transport{MaxIdleConnsPerHost: 1}
					b.Cleanup(func() { tr.CloseIdleConnections(); srv.Close() })
					client, base = &http.Client{Transport: tr}, srv.URL+"/v1"
				}
				p := providers.NewOpenAI(client, base, "sk-bench", providers.Limits{})
				req := &providers.Request{Endpoint: "/v1/chat/completions", Body: reqBody, Stream: true}
				var got int
				emit := func(ev providers.Event) error { got++; return nil }
				b.SetBytes(int64(len(sse)))
				b.ReportAllocs()
				for b.Loop() {
					got = 0
					res, err := p.Do(b.Context(), req, emit)
					if err != nil {
						b.Fatal(err)
					}
					if got != chunks+2 || res.Usage == nil || res.Usage.CompletionTokens != int64(chunks) {
						b.Fatalf("emitted %d events, usage %+v; want %d events and the usage", got, res.Usage, chunks+2)
					}
				}
			})
		}
	}
}
