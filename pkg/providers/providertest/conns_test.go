package providertest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
)

// TestFixtureCountsUsedConns: the conformance fixture's cleanup check (released) tells a
// connection that carried a request from one a client's transport dialled and never used.
// The unused one is what the hang cases leave on a busy machine (the flake of
// TestConformance/azure_messages/hang): the 100ms deadline passes while the transport is
// still dialling, the dial completes anyway, and the transport keeps the connection idle,
// which the server does not close when it stops keeping connections alive. The check must
// pass with it open, and still fail while a response is held open.
func TestFixtureCountsUsedConns(t *testing.T) {
	t.Parallel()
	t.Run("counts", testConnCounts)
	t.Run("hang whose dial outlives it", testFixtureLateDial)
}

// lateDialer is a transport whose dials wait for finish (once dialing is closed), so that
// a test can cancel the request first.
func lateDialer() (tr *http.Transport, dialing, finish chan struct{}) {
	dialing, finish = make(chan struct{}), make(chan struct{})
	tr = &http.Transport{DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
		close(dialing)
		<-finish
		var d net.Dialer
		return d.DialContext(context.Background(), network, addr)
	}}
	return tr, dialing, finish
}

func testConnCounts(t *testing.T) {
	t.Parallel()
	u, srv := Start(t, Config{DripInterval: time.Hour})

	// A request canceled while its connection is being dialled: the dial completes after
	// the request has given up, and the transport keeps the connection.
	tr, dialing, finishDial := lateDialer()
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"fake-model:hang","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		res, err := tr.RoundTrip(req)
		if err == nil {
			_ = res.Body.Close()
		}
		errc <- err
	}()
	<-dialing
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip = %v, want context.Canceled", err)
	}
	close(finishDial)
	waitFor(t, "the late dial to reach the server", func() bool { return u.Stats().OpenConns == 1 })
	if st := u.Stats(); st.OpenConns != 1 || st.UnusedConns != 1 || !released(st) {
		t.Fatalf("after a request canceled during its dial: %+v, released = %v; want 1 open, 1 unused, released",
			st, released(st))
	}

	// A streamed answer whose body the client holds open: its connection carried a request
	// and stays busy, so the check fails until the body is closed.
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	res, err := client.Post(srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"fake-model:drip","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.SetKeepAlivesEnabled(false) // as the fixture's cleanup does
	if st := u.Stats(); st.OpenConns != 2 || st.UnusedConns != 1 || released(st) {
		_ = res.Body.Close()
		t.Fatalf("with a response held open: %+v, released = %v; want 2 open, 1 unused, not released", st, released(st))
	}
	_ = res.Body.Close() // unread: the transport closes the connection
	waitFor(t, "the released response's connection to close", func() bool { return released(u.Stats()) })
	if st := u.Stats(); st.OpenConns != 1 || st.UnusedConns != 1 {
		t.Errorf("after the release: %+v, want the unused connection alone open", st)
	}

	tr.CloseIdleConnections() // the unused connection
	waitFor(t, "the unused connection to close", func() bool { return u.Stats().OpenConns == 0 })
}

// testFixtureLateDial is TestConformance's hang case with the timing of a busy machine made
// certain: the call's deadline passes while its connection is still being dialled. The
// fixture's own cleanup check (start) must pass: no response was ever held.
func testFixtureLateDial(t *testing.T) {
	t.Parallel()
	tr, dialing, finishDial := lateDialer()
	t.Cleanup(tr.CloseIdleConnections) // after the fixture's check, as with the suite's shared client
	s := &suite{endpoint: EndpointChat, wrap: func(u *Upstream) http.Handler { return u },
		newAdapter: func(base string) providers.Provider {
			return providers.NewOpenAI(&http.Client{Transport: tr}, base+"/v1", "sk-test", Limits())
		}}
	f := s.start(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := f.p.Do(ctx, s.request(call{mode: ModeHang}), func(providers.Event) error { return nil })
		errc <- err
	}()
	<-dialing
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want context.Canceled", err)
	}
	close(finishDial)
	waitFor(t, "the late dial to reach the server", func() bool { return f.u.Stats().OpenConns == 1 })
}
