package ingress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/store"
)

// storeAnswer records a succeeded job of testKey whose stored answer is body, and returns
// its id.
func (hs *harness) storeAnswer(t *testing.T, body []byte) string {
	t.Helper()
	now := time.Now()
	id := ids.NewAt("job", now)
	if _, err := hs.st.FinishJob(t.Context(), store.Outcome{JobID: id, Status: store.StatusSucceeded, StatusCode: 200,
		Response: body, Job: &store.NewJob{ID: id, KeyID: hs.key.ID, Endpoint: "/v1/chat/completions", Model: "m",
			Async: true, Metadata: map[string]string{"note": `"body":null <&>`}, CreatedAt: now,
			Deadline: now.Add(time.Minute), Attempt: 1}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// bigAnswer is a valid JSON answer of about n bytes, with what a re-encoding would change:
// whitespace between tokens, HTML characters and escapes.
func bigAnswer(n int) []byte {
	var b bytes.Buffer
	b.WriteString("{\n  \"id\": \"chatcmpl-1\",\n  \"choices\": [\n")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "    {\"index\": %d, \"text\": \"<b>a & b</b> caf\u00e9 \\u00e9 \\n %s\"},\n", i, bytes.Repeat([]byte("x"), 900))
	}
	b.WriteString("    {\"index\": -1}\n  ]\n}")
	return b.Bytes()
}

// TestGetJobWritesStoredAnswerAsIs_Issue9_7: GET /v1/jobs/{id} writes a large stored
// answer straight from the row, byte for byte as stored, instead of encoding the whole job
// object (compacting and HTML-escaping the answer) in one more buffer; the object is
// otherwise the one the encoder would write, with a Content-Length.
func TestGetJobWritesStoredAnswerAsIs_Issue9_7(t *testing.T) {
	hs := newHarness(t)
	want := bigAnswer(7 << 20)
	id := hs.storeAnswer(t, want)
	ts, _ := serveTracked(t, hs.h)
	get := func() (*http.Response, []byte) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"/v1/jobs/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}
	res, b := get()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d %.300s", res.StatusCode, b)
	}
	if cl := res.Header.Get("Content-Length"); cl != strconv.Itoa(len(b)) {
		t.Errorf("Content-Length %q, body %d bytes", cl, len(b))
	}
	var o struct {
		Response struct {
			StatusCode int             `json:"status_code"`
			Body       json.RawMessage `json:"body"`
		} `json:"response"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatalf("the job object is not JSON: %v", err)
	}
	if !bytes.Equal(o.Response.Body, want) {
		t.Errorf("response.body: %d bytes, not the %d bytes stored (re-encoded?)", len(o.Response.Body), len(want))
	}
	// Everything else is what the encoder would have written.
	row, err := hs.st.Job(t.Context(), hs.key.ID, id)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := json.Marshal(jobObject(&row))
	if err != nil {
		t.Fatal(err)
	}
	var got, exp any
	if json.Unmarshal(b, &got) != nil || json.Unmarshal(enc, &exp) != nil || !reflect.DeepEqual(got, exp) {
		t.Errorf("the job object differs from its encoding:\n got %.400s\nwant %.400s", b, enc)
	}

	// What one GET allocates, measured on a quiet process (this test is not parallel), with
	// a client that discards what it reads: pgx's read buffer for the row (a power of two,
	// 8 MiB here) and store.Job's copy of the answer, and little more. Encoding the object
	// whole added a third copy, grown by doubling (about 4× the answer in all).
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"/v1/jobs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err = ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil || res.StatusCode != http.StatusOK || n < int64(len(want)) {
		t.Fatalf("second GET: %d, %d bytes: %v", res.StatusCode, n, err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("one GET of a %.1f MiB answer allocated %.1f MiB", float64(len(want))/(1<<20), float64(alloc)/(1<<20))
	if limit := uint64(3 * len(want)); alloc > limit {
		t.Errorf("one GET allocated %d bytes, over %d (3× the answer)", alloc, limit)
	}
}

// TestJobReadsAreCapped_Issue9_7: at most INGRESS_MAX_READS job reads run at once. A read
// over the cap waits briefly for a slot, then gets 503 with Retry-After; the slots come back
// when the reads end, even reads whose client stopped reading.
func TestJobReadsAreCapped_Issue9_7(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	hs.srv.cfg.MaxReads = 2
	hs.srv.cfg.WriteStallTimeout = 10 * time.Minute // the stalled reads below hold their slots
	big := hs.storeAnswer(t, bigAnswer(16<<20))
	small := hs.storeAnswer(t, []byte(`{"id":"small"}`))
	ts, _ := serveTracked(t, hs.h)
	get := func(path string) (*http.Response, []byte) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Error(err)
			return &http.Response{}, nil
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, b
	}

	// Concurrent reads never hold more than the cap.
	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			if n := int64(len(hs.srv.readSlots())); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if res, b := get("/v1/jobs/" + small); res.StatusCode != http.StatusOK && res.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("concurrent read: %d %s", res.StatusCode, b)
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	if p := peak.Load(); p > 2 {
		t.Errorf("%d reads at once, over INGRESS_MAX_READS=2", p)
	}

	// Two clients that stop reading a large answer hold both slots...
	var stalled []io.Closer
	for range 2 {
		c := dialStalled(t, ts.Listener.Addr().String())
		if _, err := fmt.Fprintf(c, "GET /v1/jobs/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", big, testKey); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	if !waitFor(30*time.Second, func() bool { return len(hs.srv.readSlots()) == 2 }) {
		t.Fatalf("the stalled reads hold %d slots, want 2", len(hs.srv.readSlots()))
	}
	// ...so a third read, of a job or of a list, is refused after a short wait.
	for _, path := range []string{"/v1/jobs/" + small, "/v1/jobs?limit=100"} {
		res, b := get(path)
		wantError(t, res, b, http.StatusServiceUnavailable, "", "overloaded")
		if res.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s: 503 without Retry-After", path)
		}
	}
	// Once they are gone, their slots are free again.
	for _, c := range stalled {
		_ = c.Close()
	}
	if !waitFor(30*time.Second, func() bool { return len(hs.srv.readSlots()) == 0 }) {
		t.Fatalf("%d read slots still held after their clients left", len(hs.srv.readSlots()))
	}
	if res, b := get("/v1/jobs/" + small); res.StatusCode != http.StatusOK {
		t.Errorf("read after the slots came back: %d %s", res.StatusCode, b)
	}
}
