package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// errParam decodes an error answer's param and code.
func errParam(t *testing.T, b []byte) (param, code string) {
	t.Helper()
	var e struct {
		Error struct {
			Param *string `json:"param"`
			Code  *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an API error: %s", b)
	}
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	return param, code
}

// TestValidationURLs_Issue17_2_4: through the real stack, a channel's base_url is refused
// (400, param base_url) unless it is an http(s) URL with a host and a valid port, or
// fake://; a job's webhook URL is refused at submit (400, param webhook.url) when its port
// is invalid, when it is not an absolute http(s) URL, or — with private targets refused —
// when it points at a special-purpose address, IPv4 embedded in IPv6 included.
func TestValidationURLs_Issue17_2_4(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{}) // WEBHOOK_ALLOW_PRIVATE=true: only the URL's form is checked
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	t.Cleanup(hook.Close)
	s.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
	k := s.newKey(nil)

	t.Run("base_url", func(t *testing.T) {
		for _, tt := range []struct {
			baseURL any // nil: absent
			ok      bool
		}{
			{"https://api.example.com/v1", true},
			{"http://127.0.0.1:8000/v1", true},
			{"http://[::1]:8000/v1", true},
			{"fake://?latency=1ms", true}, // for the fake provider only (below)
			{"javascript:alert(1)", false},
			{"file:///etc/passwd", false},
			{"ftp://example.com/v1", false},
			{"http://", false},
			{"http://[::1", false},
			{"127.0.0.1:1", false},
			{"http://127.0.0.1:99999/v1", false},
			{"", false},
			{json.RawMessage("null"), false},
			{nil, false},
		} {
			name, _ := json.Marshal(tt.baseURL)
			t.Run(string(name), func(t *testing.T) {
				provider := "openai"
				if str, _ := tt.baseURL.(string); strings.HasPrefix(str, "fake:") {
					provider = "fake"
				}
				body := map[string]any{"name": "c", "provider": provider, "models": []string{"u"}}
				if tt.baseURL != nil {
					body["base_url"] = tt.baseURL
				}
				resp, b := s.do(http.MethodPost, "/admin/v1/channels", adminToken, body)
				if tt.ok {
					if resp.StatusCode != http.StatusCreated {
						t.Errorf("%d %s, want 201", resp.StatusCode, b)
					}
					return
				}
				if param, _ := errParam(t, b); resp.StatusCode != http.StatusBadRequest || param != "base_url" {
					t.Errorf("%d %s, want 400 with param base_url", resp.StatusCode, b)
				}
			})
		}
	})

	t.Run("webhook", func(t *testing.T) {
		for _, tt := range []struct {
			url string
			ok  bool
		}{
			{hook.URL + "/hook", true},
			{"http://127.0.0.1:99999/", false},
			{"http://127.0.0.1:0/", false},
			{"http://[::1]:65536/", false},
			{"http://[::1/", false},
			{"http://", false},
			{"ftp://127.0.0.1/", false},
			{"javascript:alert(1)", false},
			{"/relative", false},
		} {
			t.Run(tt.url, func(t *testing.T) {
				code, _ := s.submit(k.Key, map[string]any{"endpoint": "/v1/chat/completions", "body": chatBody("m", "hi"),
					"webhook": map[string]any{"url": tt.url}})
				if tt.ok != (code == http.StatusAccepted) || (!tt.ok && code != http.StatusBadRequest) {
					t.Errorf("submit with webhook %q = %d, want ok=%v", tt.url, code, tt.ok)
				}
			})
		}
	})

	t.Run("webhook SSRF", func(t *testing.T) {
		private := newStack(t, stackOpts{noPrivate: true})
		private.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
		pk := private.newKey(nil)
		for _, u := range []string{
			"http://127.0.0.1/", "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/",
			"http://[2002:a9fe:a9fe::]/", "http://0.0.0.0/", "http://198.18.0.1/", "http://240.0.0.1/",
			"http://93.184.216.34:99999/",
		} {
			resp, b := private.do(http.MethodPost, "/v1/jobs", pk.Key, map[string]any{"endpoint": "/v1/chat/completions",
				"body": chatBody("m", "hi"), "webhook": map[string]any{"url": u}})
			if param, _ := errParam(t, b); resp.StatusCode != http.StatusBadRequest || param != "webhook.url" {
				t.Errorf("webhook %s: %d %s, want 400 with param webhook.url", u, resp.StatusCode, b)
			}
		}
	})
}

// TestCancelRunningConcurrent_Issue17_5: parallel cancels of a running job all answer it as
// the cancel leaves it — cancelling, or canceled once its worker has ended it — never as
// running; the job then ends canceled.
func TestCancelRunningConcurrent_Issue17_5(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 1})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"hang"},
		"model_map": map[string]string{"hang": "m:hang"}})
	k := s.newKey(nil)
	_, j := s.submit(k.Key, map[string]any{"endpoint": "/v1/chat/completions", "body": chatBody("hang", "wait")})
	eventually(t, 10*time.Second, "job running", func() bool { _, got := s.job(k.Key, j.ID, ""); return got.Status == "running" })

	const callers = 8
	statuses := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodPost, s.base+"/v1/jobs/"+j.ID+"/cancel", nil)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+k.Key)
			resp, err := s.http.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var o jobObj
			if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || resp.StatusCode != 200 {
				t.Errorf("cancel %d: %d %v", i, resp.StatusCode, err)
			}
			statuses[i] = o.Status
		})
	}
	wg.Wait()
	for i, st := range statuses {
		if st != "cancelling" && st != "canceled" {
			t.Errorf("cancel %d answered %q, want cancelling or canceled (all: %v)", i, st, statuses)
		}
	}
	eventually(t, 10*time.Second, "job canceled", func() bool { _, got := s.job(k.Key, j.ID, ""); return got.Status == "canceled" })
	if resp, b := s.do(http.MethodPost, "/v1/jobs/"+j.ID+"/cancel", k.Key, nil); !strings.Contains(string(b), `"status":"canceled"`) {
		t.Errorf("cancel of the canceled job: %d %s", resp.StatusCode, b)
	}
}

// TestRawErrorsThroughRun_Issue17_6: the ingress binary's listener gives net/http's own
// errors the API shape (the cases are in internal/ingress's TestRawErrorsShaped_Issue17_6).
func TestRawErrorsThroughRun_Issue17_6(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true})
	for _, raw := range []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
		"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	} {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.base, "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		_ = c.Close()
		if _, code := errParam(t, b); resp.StatusCode/100 == 2 || code == "" || resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%q: %d %v %s, want an API error with X-Request-Id", raw, resp.StatusCode, resp.Header, b)
		}
	}
}
