package worker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/secret"
)

// The ways an upstream fails in FuzzUpstreamErrorHidesURL, each served by its own server.
const (
	failRefused = iota // nothing listens
	failClose          // takes the request, closes the connection
	failReset          // takes the request, resets the connection
	failGarbage        // answers bytes that are not HTTP
	failStatus         // 502 with the upstream's own error message
	failRefusal        // 400 with the upstream's own error message (passed through)
	failBadJSON        // 200 with a body that is not JSON
	failSilent         // never answers (ResponseHeaderTimeout)
	failModes
)

// upstreamSays is the message the fake upstreams put in their error bodies.
const upstreamSays = "fake upstream refuses"

// Parts of every fuzzed base URL that must never reach a client.
const (
	pathMarker  = "internal-route-7f3a"
	queryMarker = "s3cr3t-5f2a9c"
)

// clientSees is what a client may be told about an upstream that failed: the provider, and a
// fixed phrase or the upstream's status and own message (see providers.Error.Error). The
// message is the fake upstream's (upstreamSays), or net/http's when it refuses a request
// line itself ("400: Bad Request").
var clientSees = regexp.MustCompile(`^(Upstream failed after 1 attempt\(s\): )?(openai|azure|anthropic|gemini) upstream: ` +
	`(no response: (timed out|connection refused|connection reset|connection closed|connection failed)|` +
	`invalid base URL|\d{3}: .+|status \d{3}|` +
	regexp.QuoteMeta(providers.ErrBadResponse.Error()) + `.*)$`)

// failingUpstreams starts one server per failure mode and returns their host:port; the
// first (refused) is an address nothing listens on.
func failingUpstreams(f *testing.F) []string {
	f.Helper()
	hijack := func(w http.ResponseWriter, then func(net.Conn)) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		then(conn)
		_ = conn.Close()
	}
	errorBody := func(w http.ResponseWriter, status int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"error":{"message":"`+upstreamSays+`","type":"server_error"},"type":"error"}`)
	}
	stop := make(chan struct{})
	handlers := map[int]http.HandlerFunc{
		failClose: func(w http.ResponseWriter, _ *http.Request) { hijack(w, func(net.Conn) {}) },
		failReset: func(w http.ResponseWriter, _ *http.Request) {
			hijack(w, func(c net.Conn) { _ = c.(*net.TCPConn).SetLinger(0) })
		},
		failGarbage: func(w http.ResponseWriter, _ *http.Request) {
			hijack(w, func(c net.Conn) { _, _ = io.WriteString(c, "SLUICE? NO.\r\n\r\n") })
		},
		failStatus:  func(w http.ResponseWriter, _ *http.Request) { errorBody(w, http.StatusBadGateway) },
		failRefusal: func(w http.ResponseWriter, _ *http.Request) { errorBody(w, http.StatusBadRequest) },
		failBadJSON: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "<html>not json</html>")
		},
		failSilent: func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	hosts := []string{ln.Addr().String()}
	if err := ln.Close(); err != nil {
		f.Fatal(err)
	}
	for mode := failClose; mode < failModes; mode++ {
		srv := httptest.NewServer(handlers[mode])
		f.Cleanup(srv.Close)
		hosts = append(hosts, srv.Listener.Addr().String())
	}
	f.Cleanup(func() { close(stop) }) // runs before the servers close
	return hosts
}

// FuzzUpstreamErrorHidesURL (issue 9 item 12): whatever a channel's base URL holds in its
// path and query, and however its upstream fails, the 502 (or passed-through error) a
// client is given names the provider and what went wrong, never the base URL: not its host,
// port, path or query. Each call goes over real HTTP to a server that fails in one way, and
// the error is turned into the client's answer by the same functions run uses.
func FuzzUpstreamErrorHidesURL(f *testing.F) {
	hosts := failingUpstreams(f)
	reg := providers.NewRegistry(providers.ClientConfig{ResponseHeaderTimeout: 50 * time.Millisecond}, providers.Limits{})
	f.Cleanup(reg.CloseIdle)
	kinds := []string{providers.KindOpenAI, providers.KindAzure, providers.KindAnthropic, providers.KindGemini}
	for mode := range failModes {
		for kind := range len(kinds) {
			f.Add(uint8(kind), uint8(mode), "/v1?api-version=2024-10-21&token=")
		}
	}
	f.Add(uint8(0), uint8(failStatus), "/v1/%zz?key=")              // a path that does not parse
	f.Add(uint8(1), uint8(failRefused), "/openai/deployments/d?a=") // Azure's shape
	f.Add(uint8(2), uint8(failReset), "#frag?x=")
	f.Add(uint8(3), uint8(failGarbage), "@user:pass/x?")
	f.Add(uint8(0), uint8(failClose), "/a b\t/?q=\x00")
	f.Fuzz(func(t *testing.T, kindN, modeN uint8, rest string) {
		kind, mode := kinds[int(kindN)%len(kinds)], int(modeN)%failModes
		host := hosts[mode]
		_, port, _ := net.SplitHostPort(host)
		base := "http://" + host + "/" + pathMarker + rest + "&sig=" + queryMarker
		leaks := func(what, s string) {
			t.Helper()
			for _, part := range []string{host, ":" + port, pathMarker, queryMarker, "http:", "127.0.0.1"} {
				if strings.Contains(s, part) {
					t.Fatalf("%s = %q shows %q of the base URL %q", what, s, part, base)
				}
			}
		}
		p, err := reg.Build(kind, base, secret.Secret("sk-channel-key"))
		if err != nil {
			leaks("Build error", err.Error()) // the admin API and logs show it
			return
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`)
		_, err = p.Do(ctx, &providers.Request{Endpoint: "/v1/chat/completions", Body: body}, func(providers.Event) error { return nil })
		if err == nil {
			t.Fatalf("%s in mode %d succeeded", kind, mode)
		}
		if ctx.Err() != nil {
			t.Fatalf("%s in mode %d: no answer in 10s (%v)", kind, mode, err)
		}
		perr, ok := errors.AsType[*providers.Error](err)
		if !ok { // as run does
			perr = &providers.Error{Provider: kind, Err: err}
		}
		for name, out := range map[string]outcome{"upstreamFailure": upstreamFailure(perr, 1), "passThrough": passThrough(perr)} {
			if out.err == nil {
				t.Fatalf("%s: no error", name)
			}
			stored, _ := json.Marshal(out.err) // what the job's row holds and GET /v1/jobs/{id} shows
			leaks(name+" JSON", string(stored))
			if name == "passThrough" && perr.StatusCode != 0 {
				continue // the upstream's own message, as it sent it
			}
			if !clientSees.MatchString(out.err.Message) {
				t.Fatalf("%s message = %q (mode %d, base %q), want the provider and a fixed phrase or the upstream's status and message",
					name, out.err.Message, mode, base)
			}
		}
	})
}
