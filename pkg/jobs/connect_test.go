package jobs_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
)

// TestConnectWithUserPassword_Issue9_5: NATS_URL carries a user and password to a server
// that requires them, and a wrong password is refused, not ignored.
func TestConnectWithUserPassword_Issue9_5(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, Username: "sluice", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	addr := strings.TrimPrefix(ns.ClientURL(), "nats://")
	log := slog.New(slog.DiscardHandler)
	nc, err := jobs.Connect("nats://sluice:s3cret@"+addr, "test", log)
	if err != nil {
		t.Fatalf("connect with the right password: %v", err)
	}
	nc.Close()
	if nc, err := jobs.Connect("nats://sluice:wrong-s3cret@"+addr, "test", log); err == nil {
		nc.Close()
		t.Fatal("connect with a wrong password succeeded")
	} else if strings.Contains(err.Error(), "wrong-s3cret") {
		t.Errorf("the connect error shows the password: %v", err)
	}
	if nc, err := jobs.Connect("nats://"+addr, "test", log); err == nil {
		nc.Close()
		t.Fatal("connect without credentials succeeded")
	}
}

// TestReplySubjectsUnguessable_Issue9_5: a reply subject is not derived from anything a
// client sees: each ingress process has its own random prefix and each waiter a random
// token, so knowing a job id (or another waiter's subject) does not give a subject to answer on.
func TestReplySubjectsUnguessable_Issue9_5(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	a, err := jobs.NewMux(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	b, err := jobs.NewMux(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	seen := map[string]bool{}
	prefix := func(s string) string { return s[:strings.LastIndexByte(s, '.')] }
	first := a.Wait(1)
	defer first.Done()
	for range 1000 {
		w := a.Wait(1)
		if seen[w.Subject] || prefix(w.Subject) != prefix(first.Subject) {
			t.Fatalf("subject %s repeats or changes prefix", w.Subject)
		}
		tok := w.Subject[strings.LastIndexByte(w.Subject, '.')+1:]
		if len(tok) < 20 {
			t.Fatalf("waiter token %q is too short to be unguessable", tok)
		}
		seen[w.Subject] = true
		w.Done()
	}
	other := b.Wait(1)
	defer other.Done()
	if prefix(other.Subject) == prefix(first.Subject) {
		t.Errorf("two muxes share the reply prefix %s", prefix(first.Subject))
	}
}
