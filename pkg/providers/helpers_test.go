package providers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// seen is one request an upstream stub received.
type seen struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// stub is an upstream that records each request and answers with the canned reply.
type stub struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []seen
}

// reply is what a stub answers: a status, headers, and a body; a body of SSE events is
// written and flushed one event at a time.
type reply struct {
	status int
	header map[string]string
	body   string
	events []string // "event: …\ndata: …" or "data: …" blocks, each followed by a blank line
}

// newStub starts a stub upstream answering every request with r.
func newStub(t *testing.T, r reply) *stub {
	t.Helper()
	s := &stub{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, seen{Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery,
			Header: req.Header.Clone(), Body: body})
		s.mu.Unlock()
		for k, v := range r.header {
			w.Header().Set(k, v)
		}
		if r.events != nil {
			w.Header().Set("Content-Type", "text/event-stream")
		} else if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(r.status)
		_, _ = io.WriteString(w, r.body)
		for _, e := range r.events {
			_, _ = io.WriteString(w, e+"\n\n")
			_ = http.NewResponseController(w).Flush()
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// requests returns what the stub received so far.
func (s *stub) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

// only returns the one request the stub received, failing t if there were more or none.
func (s *stub) only(t *testing.T) seen {
	t.Helper()
	reqs := s.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	return reqs[0]
}

// dialTo returns a client that sends every request, whatever its host, to srv: it lets a
// test use a base URL on a real provider's host name.
func dialTo(srv *httptest.Server) *http.Client {
	addr := srv.Listener.Addr().String()
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

// events collects what an adapter emits.
type events []providers.Event

func (e *events) emit(ev providers.Event) error {
	*e = append(*e, providers.Event{Name: ev.Name, Data: bytes.Clone(ev.Data)})
	return nil
}

func (e events) names() string {
	var names []string
	for _, ev := range e {
		names = append(names, ev.Name)
	}
	return strings.Join(names, ",")
}

// jsonEqual fails t unless got and want are the same JSON value.
func jsonEqual(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s is not JSON: %v: %s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want for %s is not JSON: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s =\n%s\nwant\n%s", what, got, want)
	}
}

// chatAnswer is what a chat client makes of a stream: text and tool calls joined by index.
type chatAnswer struct {
	Content string
	Calls   []toolCall
	Finish  string
	Usage   *tokens.Usage
}

type toolCall struct{ ID, Name, Arguments string }

func joinChat(t *testing.T, evs events) chatAnswer {
	t.Helper()
	var a chatAnswer
	for _, ev := range evs {
		var c struct {
			Choices []struct {
				Delta struct {
					Content   *string `json:"content"`
					ToolCalls []struct {
						Index    int    `json:"index"`
						ID       string `json:"id"`
						Function struct {
							Name      string `json:"name"`
							Arguments string `json:"arguments"`
						} `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *tokens.Usage `json:"usage"`
		}
		if ev.Name != "" || json.Unmarshal(ev.Data, &c) != nil {
			t.Fatalf("not a chat chunk: %s %s", ev.Name, ev.Data)
		}
		if c.Usage != nil {
			a.Usage = c.Usage
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				a.Content += *ch.Delta.Content
			}
			for _, tc := range ch.Delta.ToolCalls {
				if tc.Index == len(a.Calls) {
					a.Calls = append(a.Calls, toolCall{ID: tc.ID, Name: tc.Function.Name})
				}
				a.Calls[tc.Index].Arguments += tc.Function.Arguments
			}
			if ch.FinishReason != nil {
				a.Finish = *ch.FinishReason
			}
		}
	}
	return a
}
