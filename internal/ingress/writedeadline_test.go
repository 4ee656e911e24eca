package ingress

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/store"
)

// TestWriteDeadline_Issue9_6: a client that asks for a large answer and then stops reading
// cannot hold its handler, its waiting slot and its connection for ever. Each write has a
// deadline of INGRESS_WRITE_STALL_TIMEOUT (refreshed per chunk), so the handler returns
// once the client has read nothing for that long, the connection closes, and a stream is
// cancelled as client_gone (charged for what the upstream produced).
func TestWriteDeadline_Issue9_6(t *testing.T) {
	t.Parallel()
	pad := bytes.Repeat([]byte("x"), 32<<10)
	cases := []struct {
		name   string
		stream bool
		answer func(job *jobs.Job, rep *jobs.Replier)
	}{
		{"whole answer", false, func(job *jobs.Job, rep *jobs.Replier) {
			body := fmt.Appendf(nil, `{"id":"big","pad":"%s"}`, bytes.Repeat([]byte("y"), 16<<20))
			_ = rep.Finish(&jobs.Final{JobID: job.ID, Status: store.StatusSucceeded, StatusCode: 200}, body)
		}},
		{"stream", true, func(job *jobs.Job, rep *jobs.Replier) {
			for i := range 600 { // 19 MiB of events
				if rep.Event(providers.Event{Data: fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, pad)}) != nil {
					return
				}
			}
			_ = rep.Finish(&jobs.Final{JobID: job.ID, Status: store.StatusSucceeded, StatusCode: 200}, nil)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := newHarness(t)
			hs.srv.cfg.WriteStallTimeout = 300 * time.Millisecond
			fw := hs.fakeWorker(t, tc.answer)
			ts, closed := serveTracked(t, hs.h)
			conn := dialStalled(t, ts.Listener.Addr().String())
			body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":%v}`, tc.stream)
			if _, err := fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
				"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", testKey, len(body), body); err != nil {
				t.Fatal(err)
			}
			// The client now reads nothing at all.
			if !waitFor(30*time.Second, func() bool { return len(fw.taken()) == 1 }) {
				t.Fatal("the job never reached the worker")
			}
			job := fw.taken()[0]
			done := waitFor(60*time.Second, func() bool {
				return hs.srv.inFlight.Load() == 0 && len(hs.srv.waiting) == 0 && closed() == 1
			})
			if !done {
				t.Fatalf("a client that stopped reading still holds its handler: in flight %d, waiting %d, connections closed %d",
					hs.srv.inFlight.Load(), len(hs.srv.waiting), closed())
			}
			if tc.stream {
				if !waitFor(30*time.Second, func() bool { return fw.cancel(job) != "" }) {
					t.Fatal("no cancel was published for the stalled stream")
				}
				if got := fw.cancel(job); got != jobs.CancelClientGone {
					t.Errorf("cancel reason %q, want %q (an abort the ingress makes is charged)", got, jobs.CancelClientGone)
				}
			}
		})
	}
}

// TestWriteDeadlineSparesSlowReaders_Issue9_6: the stall limit bounds a pause in reading,
// not the whole answer: a client that reads an 8 MiB answer slowly but steadily, taking
// more than twice the limit in all, gets every byte of it. (The server's socket buffer is
// kept small here: the kernel wakes a blocked writer only once a third of that buffer has
// drained, so with a loopback connection's 4 MiB a 1 s limit would measure the kernel.)
func TestWriteDeadlineSparesSlowReaders_Issue9_6(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	// The reader takes ~8 s in all, far past the limit, but never stalls near it: each read
	// comes 40 ms after the last, 75 times inside the limit, so a busy machine's pauses fit.
	hs.srv.cfg.WriteStallTimeout = 3 * time.Second
	want := fmt.Appendf(nil, `{"id":"big","pad":"%s"}`, bytes.Repeat([]byte("z"), 6<<20))
	hs.fakeWorker(t, func(job *jobs.Job, rep *jobs.Replier) {
		_ = rep.Finish(&jobs.Final{JobID: job.ID, Status: store.StatusSucceeded, StatusCode: 200}, want)
	})
	ts := httptest.NewUnstartedServer(hs.h)
	ts.Listener = smallSendBuffers{ts.Listener}
	ts.Start()
	t.Cleanup(ts.Close)
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	if _, err := fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", testKey, len(body), body); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	res, err := http.ReadResponse(bufio.NewReaderSize(&slowReader{r: conn}, 64<<10), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, read %d of %d bytes: %v", res.StatusCode, len(got), len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d bytes of the answer", len(got), len(want))
	}
	took := time.Since(began)
	if took <= hs.srv.cfg.WriteStallTimeout {
		t.Fatalf("the answer took %s, not longer than the stall limit %s: the test proves nothing", took, hs.srv.cfg.WriteStallTimeout)
	}
	t.Logf("a slow reader took %s for the answer (stall limit %s)", took.Round(time.Millisecond), hs.srv.cfg.WriteStallTimeout)
}

// smallSendBuffers gives each accepted connection a 64 KiB send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(64 << 10)
	}
	return c, err
}

// slowReader reads at most 32 KiB at a time, 40 ms apart: about 800 KiB/s.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(40 * time.Millisecond)
	return s.r.Read(p[:min(len(p), 32<<10)])
}
