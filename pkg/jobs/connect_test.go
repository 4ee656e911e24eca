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
	nc, err := jobs.Connect(jobs.ConnOptions{URL: "nats://sluice:s3cret@" + addr, Name: "test"}, log)
	if err != nil {
		t.Fatalf("connect with the right password: %v", err)
	}
	nc.Close()
	if nc, err := jobs.Connect(jobs.ConnOptions{URL: "nats://sluice:wrong-s3cret@" + addr, Name: "test"}, log); err == nil {
		nc.Close()
		t.Fatal("connect with a wrong password succeeded")
	} else if strings.Contains(err.Error(), "wrong-s3cret") {
		t.Errorf("the connect error shows the password: %v", err)
	}
	if nc, err := jobs.Connect(jobs.ConnOptions{URL: "nats://" + addr, Name: "test"}, log); err == nil {
		nc.Close()
		t.Fatal("connect without credentials succeeded")
	}
	// A password with an unescaped '/' or '#' makes the URL unparsable; the error that
	// quotes it must still not show the password, nor another URL's.
	for _, u := range []string{"nats://sluice:Xq7/ss-word@" + addr, "nats://sluice:Xq7#ss-word@" + addr,
		"nats://sluice:Xq7%zz-word@" + addr, "nats://" + addr + ",nats://sluice:Xq7/ss-word@" + addr} {
		nc, err := jobs.Connect(jobs.ConnOptions{URL: u, Name: "test"}, log)
		if err == nil {
			nc.Close()
			t.Errorf("connect to %s succeeded", u)
			continue
		}
		if strings.Contains(err.Error(), "Xq7") || strings.Contains(err.Error(), "-word") {
			t.Errorf("the connect error shows the password: %v", err)
		}
	}
}

// TestReplySubjectsUnguessable_Issue9_5: a reply subject is not derived from anything a
// client sees: each ingress process has its own random prefix and each waiter a random
// token, so knowing a job id (or other waiters' subjects) does not give a subject to answer
// on. Random means from crypto/rand, not a sequence: nuid-like tokens, whose consecutive
// values share a long prefix and count up, fail here.
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
	split := func(s string) (prefix, tok string) {
		i := strings.LastIndexByte(s, '.')
		return s[:i], s[i+1:]
	}
	first := a.Wait(1)
	defer first.Done()
	aPrefix, prev := split(first.Subject)
	// Two random base32 strings share a first character with chance 1/32; six in a row,
	// 32^-6 ≈ 1e-9 per pair. Sequential ids share nearly all of theirs.
	const maxShared = 5
	longest := 0
	for range 1000 {
		w := a.Wait(1)
		prefix, tok := split(w.Subject)
		if seen[w.Subject] || prefix != aPrefix {
			t.Fatalf("subject %s repeats or changes prefix", w.Subject)
		}
		if len(tok) < 22 || strings.ContainsAny(tok, ".*> ") {
			t.Fatalf("waiter token %q: want at least 22 characters (128 bits), no '.', '*', '>'", tok)
		}
		longest = max(longest, sharedPrefix(prev, tok))
		seen[w.Subject], prev = true, tok
		w.Done()
	}
	if longest > maxShared {
		t.Errorf("consecutive waiter tokens share up to %d leading characters: a sequence, not random", longest)
	}
	other := b.Wait(1)
	defer other.Done()
	bPrefix, _ := split(other.Subject)
	if bPrefix == aPrefix {
		t.Fatalf("two muxes share the reply prefix %s", aPrefix)
	}
	pa, pb := strings.TrimPrefix(aPrefix, "sluice.reply."), strings.TrimPrefix(bPrefix, "sluice.reply.")
	if n := sharedPrefix(pa, pb); n > maxShared || len(pa) < 22 {
		t.Errorf("mux prefixes %q and %q: share %d leading characters; want random, at least 22 characters", pa, pb, n)
	}
}

func sharedPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
