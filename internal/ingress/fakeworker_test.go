package ingress

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/jobs"
)

// fakeWorker answers the harness's sync jobs as a worker would, over real NATS: answer is
// called, on the subscription's goroutine, with each job published and a Replier for it.
// Cancels published for any job are recorded, as "job id: reason".
type fakeWorker struct {
	mu      sync.Mutex
	jobs    []string
	cancels map[string]string
}

func (hs *harness) fakeWorker(t *testing.T, answer func(job *jobs.Job, rep *jobs.Replier)) *fakeWorker {
	t.Helper()
	fw := &fakeWorker{cancels: map[string]string{}}
	nc := hs.srv.nc
	cancels, err := nc.Subscribe("sluice.cancel.>", func(m *nats.Msg) {
		fw.mu.Lock()
		defer fw.mu.Unlock()
		fw.cancels[m.Subject[len("sluice.cancel."):]] = string(m.Data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cancels.Unsubscribe() })
	sub, err := nc.Subscribe("sluice.jobs.>", func(m *nats.Msg) {
		job, err := jobs.Decode(m.Data)
		if err != nil || job.Reply == "" {
			return
		}
		fw.mu.Lock()
		fw.jobs = append(fw.jobs, job.ID)
		fw.mu.Unlock()
		answer(job, jobs.NewReplier(nc, job, 1))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return fw
}

// taken returns the ids of the jobs the fake worker has answered (or is answering).
func (fw *fakeWorker) taken() []string {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return append([]string(nil), fw.jobs...)
}

// cancel returns the reason of the cancel published for job id, or "".
func (fw *fakeWorker) cancel(id string) string {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.cancels[id]
}

// serveTracked serves h on a real loopback listener and counts its connections that have
// closed.
func serveTracked(t *testing.T, h http.Handler) (*httptest.Server, func() int) {
	t.Helper()
	var (
		mu     sync.Mutex
		closed int
	)
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed || st == http.StateHijacked {
			mu.Lock()
			closed++
			mu.Unlock()
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, func() int {
		mu.Lock()
		defer mu.Unlock()
		return closed
	}
}

// dialStalled opens a TCP connection whose receive buffer is as small as the kernel allows,
// for a client that will stop reading: the server's writes then fill the window at once.
func dialStalled(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the server's cleanup, so it runs first: the server's Close waits for
	// its connections, and this one would otherwise be held open by a blocked handler.
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitFor polls cond every 10 ms until it holds or the deadline passes; it reports whether
// it held.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}
