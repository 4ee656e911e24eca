package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.host != "127.0.0.1" || c.port != 4222 || c.maxPayload != 8<<20 || !strings.HasSuffix(c.storeDir, ".dev/nats") {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	for _, args := range [][]string{
		{"-addr", "nope"},
		{"-addr", "127.0.0.1:99999"},
		{"-max-payload", "0"},
		{"-store", ""},
		{"extra"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q): want error", args)
		}
	}
}

func TestServerJetStreamAndPayload(t *testing.T) {
	c, err := parseFlags([]string{"-addr", "127.0.0.1:0", "-store", t.TempDir(), "-quiet", "-max-payload", "4194304"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := start(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != 4194304 {
		t.Fatalf("MaxPayload = %d, want 4194304", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 3<<20)
	if _, err := js.Publish(ctx, "t.big", big); err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "t.big")
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Data) != len(big) {
		t.Fatalf("stored %d bytes, want %d", len(msg.Data), len(big))
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	// Reserve a free port, then hand it to run.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", addr, "-store", t.TempDir(), "-quiet"}, &stderr) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("server never answered on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("server still listening after shutdown")
	}
}

func TestRunBadFlags(t *testing.T) {
	if err := run(context.Background(), []string{"-addr", "bad"}, &bytes.Buffer{}); err == nil {
		t.Fatal("want error")
	}
}
