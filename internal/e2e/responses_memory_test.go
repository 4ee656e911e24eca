package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize()), err
}

// The configuration of TestResponsesStreamMemory_Issue11 and the bound it implies.
const (
	memAnswerBytes = 50 << 20 // the streamed answer
	memRecapBytes  = 1 << 20  // RESPONSES_RECAP_MAX_BYTES
	memLimit       = 48 << 20 // GOMEMLIMIT of both processes
	// memSlack is what a process may hold above its limit: the limit is soft, and RSS also
	// counts what the runtime has not yet returned to the kernel and non-heap memory.
	memSlack = 32 << 20
)

// TestResponsesStreamMemory_Issue11: a 50 MB answer streamed through /v1/responses (an
// openai channel translated from chat completions, so the worker builds every event) keeps
// the ingress and worker processes' RSS within what their configuration allows: each
// holds a few events at a time, and the worker repeats at most RESPONSES_RECAP_MAX_BYTES
// of the text in the closing events, whatever the answer's length. The processes run with
// GOMEMLIMIT, so that memory they could free is freed: a process that held the answer
// would exceed the bound, since the answer alone is larger than it.
func TestResponsesStreamMemory_Issue11(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 50 MB through real processes")
	}
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true, jobTimeout: 5 * time.Minute, idleTimeout: time.Minute})
	_, up := providertest.Start(t, providertest.Config{BigBytes: memAnswerBytes})

	ingAddr := freeAddr(t)
	ing := startProc(t, "ingress", ingAddr, map[string]string{
		"DATABASE_URL": s.db.URL, "NATS_URL": s.nats.URL, "SLUICE_ADMIN_TOKEN": adminToken,
		"SLUICE_ENCRYPTION_KEY": s.db.EncryptionKey, "INGRESS_ADDR": ingAddr, "JOB_TIMEOUT": "5m",
		"CHANNEL_REFRESH": "1s", "SHUTDOWN_GRACE": "5s", "LOG_LEVEL": "error", "GOMEMLIMIT": strconv.Itoa(memLimit),
	})
	s.base = "http://" + ingAddr // configured through the ingress process; the in-process one stays idle
	s.channel(map[string]any{"name": "big", "provider": "openai", "base_url": up.URL + "/v1", "models": []string{"gpt-x:big"}})
	key := s.newKey(nil)
	wAddr := freeAddr(t)
	wenv := s.workerEnv(wAddr, 8)
	wenv["RESPONSES_RECAP_MAX_BYTES"], wenv["GOMEMLIMIT"], wenv["LOG_LEVEL"] = strconv.Itoa(memRecapBytes), strconv.Itoa(memLimit), "error"
	work := startProc(t, "worker", wAddr, wenv)

	procs := map[string]*proc{"ingress": ing, "worker": work}
	var rest, peak sync.Map // name → int64
	for name, p := range procs {
		r, err := rssBytes(p.cmd.Process.Pid)
		if err != nil {
			t.Skipf("cannot read RSS: %v", err)
		}
		rest.Store(name, r)
	}
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	var samples atomic.Int64
	sampler.Go(func() {
		for {
			for name, p := range procs {
				if r, err := rssBytes(p.cmd.Process.Pid); err == nil {
					if old, ok := peak.Load(name); !ok || r > old.(int64) {
						peak.Store(name, r)
					}
				}
			}
			samples.Add(1)
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})

	body := `{"model":"gpt-x:big","input":"stream a long answer","stream":true}`
	req, err := http.NewRequest(http.MethodPost, s.base+"/v1/responses", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key.Key)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 5 * time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var deltas, events int64
	var last, doneText string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	// The client must keep up (a reader too slow for the ingress's buffer loses the stream,
	// by design), so text deltas, which the fake fills with "fake " and no escapes, are
	// measured without decoding them.
	deltaPrefix := `data: {"type":"response.output_text.delta",`
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(deltaPrefix)) {
			_, rest, ok := bytes.Cut(line, []byte(`"delta":"`))
			end := bytes.IndexByte(rest, '"')
			if !ok || end < 0 {
				t.Fatalf("delta event without a plain delta: %.200s", line)
			}
			events++
			deltas += int64(end)
			last = "response.output_text.delta"
			continue
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		var ev struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatalf("event %d is not JSON: %v", events, err)
		}
		events++
		last = ev.Type
		if ev.Type == "response.failed" {
			t.Logf("failed: %.500s", data)
		}
		if ev.Type == "response.output_text.done" {
			doneText = ev.Text
		}
	}
	close(stop)
	sampler.Wait()
	if err := sc.Err(); err != nil {
		t.Fatalf("read the stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK || last != "response.completed" || deltas != memAnswerBytes {
		t.Fatalf("stream: status %d, %d events, %d bytes of text deltas, last %s; want %d bytes ending in response.completed",
			resp.StatusCode, events, deltas, last, memAnswerBytes)
	}
	if doneText != "" {
		t.Errorf("output_text.done repeated %d bytes of text, over RESPONSES_RECAP_MAX_BYTES=%d", len(doneText), memRecapBytes)
	}
	bound := int64(memLimit + memSlack)
	for name := range procs {
		r, _ := rest.Load(name)
		p, _ := peak.Load(name)
		t.Logf("%s RSS: %.1f MiB at rest, peak %.1f MiB while streaming %d MiB (bound %d MiB; %d samples)",
			name, float64(r.(int64))/(1<<20), float64(p.(int64))/(1<<20), memAnswerBytes>>20, bound>>20, samples.Load())
		if p.(int64) > bound {
			t.Errorf("%s RSS peaked at %.1f MiB, over the bound of %d MiB (GOMEMLIMIT %d MiB + %d MiB)",
				name, float64(p.(int64))/(1<<20), bound>>20, memLimit>>20, memSlack>>20)
		}
	}
}
