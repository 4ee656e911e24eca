package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr bool
	}{
		{name: "defaults", want: config{addr: "127.0.0.1:8089"}},
		{
			name: "flags",
			args: []string{"-addr", ":1", "-mix", "ok=1,429=1", "-seed", "9", "-latency", "20ms", "-jitter", "5ms", "-log-level", "debug"},
			want: config{addr: ":1", logLevel: -4, upstream: providertest.Config{Mix: "ok=1,429=1", Seed: 9,
				Latency: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}},
		},
		{
			name: "env, overridden by a flag",
			args: []string{"-seed", "2"},
			env:  map[string]string{"FAKE_UPSTREAM_MIX": "hang=1", "FAKE_UPSTREAM_SEED": "1", "FAKE_UPSTREAM_RETRY_AFTER": "3"},
			want: config{addr: "127.0.0.1:8089", upstream: providertest.Config{Mix: "hang=1", Seed: 2, RetryAfter: 3}},
		},
		{name: "bad env", env: map[string]string{"FAKE_UPSTREAM_LATENCY": "soon", "FAKE_UPSTREAM_SEED": "x"}, wantErr: true},
		{name: "bad flag", args: []string{"-jitter", "x"}, wantErr: true},
		{name: "stray argument", args: []string{"serve"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseConfig() error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("parseConfig() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer that run's logger and the test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// logged returns the value of key in the first log line with message msg.
func (s *syncBuffer) logged(msg, key string) (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
			v, ok := line[key]
			return v, ok
		}
	}
	return nil, false
}

// TestRun serves, answers, and shuts down while a request hangs.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out syncBuffer
	runErr := make(chan error, 1)
	go func() { runErr <- run(ctx, []string{"-addr", "127.0.0.1:0", "-mix", "ok=1"}, &out) }()

	var addr string
	waitFor(t, "the listening log line", func() bool {
		a, ok := out.logged("listening", "addr")
		addr, _ = a.(string)
		return ok
	})
	// No keep-alives: a connection the transport dialled but did not use would sit idle in
	// StateNew, which http.Server.Shutdown waits 5 s for, as long as the whole grace.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	post := func(ctx context.Context, model string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			return nil, err
		}
		return client.Do(req)
	}
	resp, err := post(t.Context(), "gpt-4o")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Echo: hi") {
		t.Fatalf("ok answer: %d %s %v", resp.StatusCode, body, err)
	}

	hung := make(chan error, 1)
	go func() {
		resp, err := post(context.WithoutCancel(t.Context()), "fake-hang")
		if err == nil {
			resp.Body.Close()
		}
		hung <- err
	}()
	waitFor(t, "the hanging request", func() bool {
		resp, err := client.Get("http://" + addr + "/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var s providertest.Stats
		return json.NewDecoder(resp.Body).Decode(&s) == nil && s.Requests[providertest.ModeHang] == 1
	})
	cancel()
	if err := <-runErr; err != nil {
		t.Errorf("run() = %v, want nil", err)
	}
	if err := <-hung; err == nil {
		t.Error("hanging request succeeded, want a connection error at shutdown")
	}
	if _, ok := out.logged("stopped", "succeeded"); !ok {
		t.Errorf("no stopped log line in:\n%s", out.b.String())
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"bad mix", []string{"-addr", "127.0.0.1:0", "-mix", "ok=nope"}},
		{"bad address", []string{"-addr", "127.0.0.1:-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := run(t.Context(), tt.args, io.Discard); err == nil {
				t.Error("run() = nil, want an error")
			}
		})
	}
}

// waitFor polls cond until it holds, failing t after ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
