package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

// legacyAdminToken is what an older dev.sh left in .dev/admin-token: the token before its
// '+/' → '-_' translation, while the ingress was given the translated one.
const legacyAdminToken = "Ab+Cd/Ef+Gh/Ij+Kl/Mn+Op/Q"

// TestDevScriptQuickStart_Issue9_15 runs `make run` (scripts/dev.sh) on free ports with its
// own state directory, database schema and NATS server, so it cannot touch a developer's
// running stack or another test; follows the README's quick start (the admin token from
// .dev/admin-token creates a key, then chat completions against the built-in fake model,
// whole and streamed, with that key and with the dev key); then stops it with SIGTERM and
// checks that it exits 0 and leaves no process behind.
func TestDevScriptQuickStart_Issue9_15(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "go", "psql", "pg_isready"} { // what dev.sh itself needs
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("dev.sh needs %s, which is not installed: %v", tool, err)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const adminLine = `ADMIN="Authorization: Bearer $(cat .dev/admin-token)"`
	const keyCurl = `curl -X POST localhost:8080/admin/v1/keys -H "$ADMIN" -H 'Content-Type: application/json'`
	for _, s := range []string{adminLine, keyCurl} {
		if !strings.Contains(string(readme), s) {
			t.Fatalf("README no longer has %q; update this test to follow it", s)
		}
	}
	chatCurl := readmeBlock(t, string(readme), "/v1/chat/completions", "$(cat .dev/dev-key)")
	responsesCurl := readmeBlock(t, string(readme), "/v1/responses", "$(cat .dev/dev-key)")

	work := t.TempDir()
	dev := filepath.Join(work, ".dev")
	if err := os.Mkdir(dev, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "admin-token"), []byte(legacyAdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	nats := jobstest.NewServer(t)
	httpPort, workerPort := freePort(t), freePort(t)

	cmd := exec.Command("bash", "../../scripts/dev.sh")
	cmd.Env = devEnv(map[string]string{
		"SLUICE_DEV_DIR": dev, "SLUICE_HTTP_PORT": httpPort, "SLUICE_WORKER_PORT": workerPort,
		"DATABASE_URL": schemaURL(t), "NATS_URL": nats.URL, "SHUTDOWN_GRACE": "5s", "LOG_LEVEL": "warn",
		// Only the servers given above: never the machine's own, nor a private one.
		"SLUICE_SYSTEM_PG_URL": "none", "SLUICE_SYSTEM_NATS_URL": "none",
	})
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, to find what it leaves
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped { // a failure midway: nothing may outlive the test
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			if err := <-exited; err != nil {
				t.Logf("dev.sh after SIGKILL: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("dev.sh output:\n%s", out.String())
			for _, f := range []string{"worker.log", "ingress.log"} {
				b, _ := os.ReadFile(filepath.Join(dev, f))
				t.Logf("%s:\n%s", f, b)
			}
		}
	})

	// A cold build on a busy machine takes a while; dev.sh prints this once all is up.
	deadline := time.Now().Add(5 * time.Minute)
	for !strings.Contains(out.String(), "Sluice is up") {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("dev.sh exited before the stack was up: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("dev.sh did not bring the stack up within 5 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}

	tok, err := os.ReadFile(filepath.Join(dev, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.NewReplacer("+", "-", "/", "_").Replace(legacyAdminToken); string(tok) != want {
		t.Errorf(".dev/admin-token = %q, want the token the ingress uses, %q", tok, want)
	}

	port := func(s string) string { return strings.ReplaceAll(s, "8080", httpPort) }
	// The README's commands, run as written (curl made to fail on an HTTP error status).
	sh := func(script string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+
			`curl() { command curl -sS --fail-with-body --max-time 30 "$@"; }`+"\n"+script)
		c.Dir, c.Env = work, devEnv(nil)
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s\n: %v\n%s", script, err, b)
		}
		return string(b)
	}
	var created struct {
		Key string `json:"key"`
	}
	b := sh(adminLine + "\n" + port(keyCurl) + ` -d '{"name": "quickstart"}'`)
	if err := json.Unmarshal([]byte(b), &created); err != nil || !strings.HasPrefix(created.Key, "sk-sl-") {
		t.Fatalf("admin key creation answered %q, want a new sk-sl- key", b)
	}
	for name, curl := range map[string]string{
		"dev key":     port(chatCurl),
		"created key": strings.ReplaceAll(port(chatCurl), "$(cat .dev/dev-key)", created.Key),
	} {
		var chat struct {
			Object  string `json:"object"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		b := sh(curl)
		if err := json.Unmarshal([]byte(b), &chat); err != nil || chat.Object != "chat.completion" || len(chat.Choices) != 1 ||
			chat.Choices[0].Message.Content == "" || chat.Usage.CompletionTokens == 0 {
			t.Errorf("%s: chat completion answered %q, want a chat.completion from the fake model", name, b)
		}
		// `Add "stream": true for server-sent events.`
		streamed := sh(strings.Replace(curl, `"model":"fake-model"`, `"model":"fake-model","stream":true`, 1))
		if !strings.Contains(streamed, "data: {") || !strings.HasSuffix(strings.TrimSpace(streamed), "data: [DONE]") {
			t.Errorf("%s: streamed chat completion answered %q, want SSE chunks ending in [DONE]", name, streamed)
		}
	}

	// The quick start's Responses call, against the fake model (issue 11).
	var resp struct {
		Object string `json:"object"`
		Status string `json:"status"`
		Output []struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
	}
	if b := sh(port(responsesCurl)); json.Unmarshal([]byte(b), &resp) != nil || resp.Object != "response" ||
		resp.Status != "completed" || len(resp.Output) != 1 || len(resp.Output[0].Content) != 1 || resp.Output[0].Content[0].Text == "" {
		t.Errorf("the README's /v1/responses curl answered %q, want a completed response from the fake model", b)
	}

	// Stop it as Ctrl-C would (dev.sh only: it must stop its children itself).
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("dev.sh after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("dev.sh did not exit within 60s of SIGTERM")
	}
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes of dev.sh's group remain after it stopped (kill -0: %v)", err)
	}
	for _, p := range []string{httpPort, workerPort} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, time.Second); err == nil {
			c.Close()
			t.Errorf("something still listens on port %s after dev.sh stopped", p)
		}
	}
}

// readmeBlock returns the first fenced code block of the README holding every one of subs.
func readmeBlock(t *testing.T, readme string, subs ...string) string {
	t.Helper()
	parts := strings.Split(readme, "```")
	for i := 1; i < len(parts); i += 2 { // odd parts are inside fences
		_, body, _ := strings.Cut(parts[i], "\n") // drop the info string ("sh")
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(body, s)
		}
		if ok {
			return body
		}
	}
	t.Fatalf("README has no code block with %q; update this test to follow it", subs)
	return ""
}

// devEnv is a clean environment for dev.sh and the README's commands: what the toolchain
// needs from ours, none of the Sluice settings a developer may have exported, plus extra.
func devEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "GOGC" || k == "GOMEMLIMIT":
		case strings.HasPrefix(k, "GO"), strings.HasPrefix(k, "XDG_"), strings.HasPrefix(k, "LC_"),
			k == "PATH", k == "HOME", k == "USER", k == "TMPDIR", k == "LANG":
			env = append(env, kv)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	_, p, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// schemaURL creates a fresh schema in the test database, dropped when the test ends, and
// returns a URL whose connections use it; unlike storetest's, the URL is one psql takes too
// (options=-csearch_path=…), as dev.sh's scripts/ensure-postgres.sh checks it with psql.
func schemaURL(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema := "devsh_" + strings.ToLower(rand.Text())
	conn, err := pgx.Connect(ctx, storetest.URL())
	if err != nil {
		t.Fatalf("connect to test Postgres: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, storetest.URL())
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u := storetest.URL()
	opt := "-csearch_path=" + schema
	if !strings.Contains(u, "://") {
		return u + " options='" + opt + "'"
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "options=" + url.QueryEscape(opt)
}
