package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// quotaUpstream is a fake OpenAI-compatible upstream started with an account's quota: rpm
// calls per wall-clock minute and maxInFlight at once. Calls over either are answered 429,
// as a real upstream would, and counted.
type quotaUpstream struct {
	*httptest.Server
	rpm, maxInFlight int

	mu                   sync.Mutex
	minute               time.Time
	inMinute, inFlight   int
	calls, over, maxSeen int
}

func newQuotaUpstream(t *testing.T, rpm, maxInFlight int) *quotaUpstream {
	t.Helper()
	u := &quotaUpstream{rpm: rpm, maxInFlight: maxInFlight}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *quotaUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	now := time.Now().Truncate(time.Minute)
	if !now.Equal(u.minute) {
		u.minute, u.inMinute = now, 0
	}
	u.calls++
	u.inMinute++
	u.inFlight++
	u.maxSeen = max(u.maxSeen, u.inFlight)
	over := u.inMinute > u.rpm || u.inFlight > u.maxInFlight
	if over {
		u.over++
	}
	u.mu.Unlock()
	defer func() { u.mu.Lock(); u.inFlight--; u.mu.Unlock() }()
	if over {
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":{"message":"quota exceeded","type":"rate_limit_error","code":"rate_limit_exceeded"}}`,
			http.StatusTooManyRequests)
		return
	}
	time.Sleep(30 * time.Millisecond) // a call takes a while, so calls overlap
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprint(w, `{"id":"c1","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,`+
		`"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
		`"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
}

func (u *quotaUpstream) counts() (calls, over, maxSeen int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls, u.over, u.maxSeen
}

// TestChannelQuota_Issue15_4: a channel's rpm and max_concurrency hold across two workers
// (behind two ingresses): under a load well above the quota the upstream sees at most its
// quota and never answers 429, because the workers defer calls instead of sending them.
func TestChannelQuota_Issue15_4(t *testing.T) {
	t.Parallel()
	const rpm, conc, load = 8, 2, 24
	up := newQuotaUpstream(t, rpm, conc)
	s := newStack(t, stackOpts{noWorker: true, jobTimeout: 10 * time.Second})
	s.startWorker()
	s.startWorker()
	bases := [2]string{s.base}
	bases[1], _ = s.startIngress()
	s.channel(map[string]any{"provider": "openai", "base_url": up.URL + "/v1", "models": []string{"m"},
		"rpm": rpm, "max_concurrency": conc})
	k := s.newKey(nil)
	eventually(t, 30*time.Second, "the second ingress knows the channel", func() bool {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, bases[1]+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+k.Key)
		res, err := s.http.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		return res.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"m"`))
	})
	// The whole load must fall in one minute of the upstream's window, and a deferral to the
	// next minute must outlast the job timeout: start early in a minute.
	eventually(t, 60*time.Second, "the first 40s of a minute", func() bool {
		return time.Since(time.Now().Truncate(time.Minute)) < 40*time.Second
	})
	codes := make([]int, load)
	var wg sync.WaitGroup
	for i := range load {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, bases[i%2]+"/v1/chat/completions",
				jsonBody(t, chatBody("m", "hi")))
			req.Header.Set("Authorization", "Bearer "+k.Key)
			req.Header.Set("Content-Type", "application/json")
			res, err := s.http.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_ = res.Body.Close()
			codes[i] = res.StatusCode
		})
	}
	wg.Wait()
	byCode := map[int]int{}
	for _, c := range codes {
		byCode[c]++
	}
	calls, over, maxSeen := up.counts()
	t.Logf("load %d against rpm %d / max_concurrency %d: upstream calls %d, over quota %d, most in flight %d; answers %v",
		load, rpm, conc, calls, over, maxSeen, byCode)
	if over != 0 || calls > rpm || maxSeen > conc {
		t.Errorf("upstream saw %d calls (%d over its quota, %d at once); want at most %d, none over, at most %d at once",
			calls, over, maxSeen, rpm, conc)
	}
	if byCode[http.StatusOK] != rpm {
		t.Errorf("%d answered 200, want the quota's %d", byCode[http.StatusOK], rpm)
	}
	if byCode[http.StatusTooManyRequests] != 0 {
		t.Errorf("%d answers were 429s caused by the upstream", byCode[http.StatusTooManyRequests])
	}
}

func jsonBody(t *testing.T, v any) io.Reader {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}
