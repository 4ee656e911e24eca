package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/ingress"
	"github.com/sluicehq/sluice/internal/worker"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
)

// keyedUpstream is a fake OpenAI upstream that records the bearer keys it is called with.
type keyedUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

func newKeyedUpstream(t *testing.T) *keyedUpstream {
	t.Helper()
	up, err := providertest.New(providertest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	k := &keyedUpstream{}
	k.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.seen = append(k.seen, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		k.mu.Unlock()
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { up.Close(); k.srv.Close() })
	return k
}

// last returns the bearer key of the latest request.
func (k *keyedUpstream) last() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.seen) == 0 {
		return ""
	}
	return k.seen[len(k.seen)-1]
}

// restart stops this stack's worker and ingress and starts them again with its (changed)
// configurations, as a rolling restart after a configuration change does.
func (s *stack) restart() {
	s.t.Helper()
	s.stopI()
	s.stopW()
	s.ops, s.stopW = s.startWorker()
	s.base, s.stopI = s.startIngress()
}

// setKeys sets SLUICE_ENCRYPTION_KEY and SLUICE_ENCRYPTION_KEYS_OLD for the next restart.
func (s *stack) setKeys(current string, old ...string) {
	var l secret.List
	for _, k := range old {
		l = append(l, secret.Secret(k))
	}
	s.wcfg.EncryptionKey, s.wcfg.EncryptionKeysOld = secret.Secret(current), l
	s.icfg.EncryptionKey, s.icfg.EncryptionKeysOld = secret.Secret(current), l
}

// chatOK sends a chat completion for model and fails the test unless it succeeds.
func (s *stack) chatOK(key, model string) {
	s.t.Helper()
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", key, chatBody(model, "rotate the keys"))
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("chat with %s = %d %s", model, resp.StatusCode, b)
	}
}

// reseal runs the real `worker reseal` binary and returns its exit status and output.
func reseal(t *testing.T, dbURL, current string, old ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t, "worker"), "reseal", "-batch", "1")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dbURL, "SLUICE_ENCRYPTION_KEY=" + current,
		"SLUICE_ENCRYPTION_KEYS_OLD=" + strings.Join(old, ","), "LOG_LEVEL=info"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("worker reseal did not finish within 60s:\n%s", out.String())
	}
	var exit *exec.ExitError
	if err != nil && !asError(err, &exit) {
		t.Fatalf("worker reseal: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// TestKeyRotation_Issue9_19 rotates SLUICE_ENCRYPTION_KEY on a running stack the way the
// README says: new key current and the old one in SLUICE_ENCRYPTION_KEYS_OLD, restart,
// `worker reseal`, then drop the old key. The upstream gets the right key at every step.
func TestKeyRotation_Issue9_19(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up := newKeyedUpstream(t)
	const upKey, upKey2 = "sk-upstream-rotation-0123456789", "sk-upstream-second-0123456789"
	s.channel(map[string]any{"name": "rot", "provider": "openai", "base_url": up.srv.URL + "/v1", "api_key": upKey,
		"models": []string{"rot-model"}})
	k := s.newKey(nil)
	s.chatOK(k.Key, "rot-model")
	oldKey, nextKey := s.db.EncryptionKey, newEncryptionKey(t)

	// 1. New key current, old key kept for opening: everything sealed before still works.
	s.setKeys(nextKey, oldKey)
	s.restart()
	s.chatOK(k.Key, "rot-model")
	if up.last() != upKey {
		t.Fatalf("upstream got key %q after the restart, want the channel's", up.last())
	}
	s.channel(map[string]any{"name": "second", "provider": "openai", "base_url": up.srv.URL + "/v1", "api_key": upKey2,
		"models": []string{"second-model"}}) // sealed under the new key

	// 2. Reseal: the old channel key and the API key's webhook secret move; the new channel
	// key is already current. Again: nothing to do.
	code, out := reseal(t, s.db.URL, nextKey, oldKey)
	if code != 0 || !strings.Contains(out, "resealed 2, already current 1, unreadable 0") {
		t.Fatalf("worker reseal = exit %d:\n%s\nwant exit 0, resealed 2, already current 1", code, out)
	}
	code, out = reseal(t, s.db.URL, nextKey, oldKey)
	if code != 0 || !strings.Contains(out, "resealed 0, already current 3, unreadable 0") {
		t.Fatalf("worker reseal again = exit %d:\n%s\nwant exit 0 and nothing resealed", code, out)
	}
	if strings.Contains(out, upKey) || strings.Contains(out, oldKey) || strings.Contains(out, nextKey) {
		t.Errorf("worker reseal output holds a secret:\n%s", out)
	}

	// 3. Drop the old key: the new key alone opens every value.
	s.setKeys(nextKey)
	s.restart()
	s.chatOK(k.Key, "rot-model")
	s.chatOK(k.Key, "second-model")
	if up.last() != upKey2 {
		t.Errorf("upstream got key %q for the second channel", up.last())
	}
	sealer, err := store.NewSealer(nextKey)
	if err != nil {
		t.Fatal(err)
	}
	if ws, err := store.New(s.db.Pool, sealer).WebhookSecret(context.Background(), k.ID); err != nil || ws.Reveal() != k.WebhookSecret {
		t.Errorf("webhook secret under the new key alone: ok=%v err=%v", ws.Reveal() == k.WebhookSecret, err)
	}

	// 4. Reseal with the wrong key: every value is reported unreadable by its row id, exit 1,
	// and nothing is changed.
	code, out = reseal(t, s.db.URL, oldKey)
	if code != 1 || !strings.Contains(out, "unreadable 3") || !strings.Contains(out, k.ID) {
		t.Errorf("worker reseal with the wrong key = exit %d:\n%s\nwant exit 1, 3 unreadable rows named", code, out)
	}
	s.chatOK(k.Key, "rot-model")
}

// TestUnreadableChannelKeySkipped_Issue9_19: one channel whose stored key no configured key
// opens (corrupted, or sealed under a key since lost) must not stop the worker or the
// ingress from loading the others. That channel is skipped, logged by id without its
// secret, and the admin API shows why.
func TestUnreadableChannelKeySkipped_Issue9_19(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up := newKeyedUpstream(t)
	const goodKey, badKey = "sk-upstream-good-0123456789", "sk-upstream-bad-0123456789"
	s.channel(map[string]any{"name": "good", "provider": "openai", "base_url": up.srv.URL + "/v1", "api_key": goodKey,
		"models": []string{"shared-model"}, "priority": 1})
	bad := s.channel(map[string]any{"name": "bad", "provider": "openai", "base_url": up.srv.URL + "/v1", "api_key": badKey,
		"models": []string{"shared-model", "bad-only-model"}, "priority": 10})
	if _, err := s.db.Pool.Exec(context.Background(),
		`UPDATE channels SET api_key = set_byte(api_key, length(api_key) - 1, get_byte(api_key, length(api_key) - 1) # 255)
		WHERE id = $1`, bad); err != nil {
		t.Fatal(err)
	}

	// Restart: loading channels at start used to fail the whole worker.
	s.stopI()
	s.stopW()
	var logs syncBuffer
	var addr string
	s.stopW = run(t, "worker", func(ctx context.Context, ln net.Listener, ready func(string)) error {
		return worker.Run(ctx, s.wcfg, slog.New(slog.NewJSONHandler(&logs, nil)), worker.Options{Listener: ln, Ready: ready})
	}, &addr)
	s.base, s.stopI = s.startIngress()

	k := s.newKey(nil)
	for range 3 { // the bad channel has the higher priority: were it used, this would reach it
		s.chatOK(k.Key, "shared-model")
		if up.last() != goodKey {
			t.Fatalf("upstream got key %q, want the good channel's", up.last())
		}
	}
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("bad-only-model", "x"))
	if resp.StatusCode/100 != 4 {
		t.Errorf("model served only by the unreadable channel = %d %s, want a 4xx", resp.StatusCode, b)
	}
	if log := logs.String(); !strings.Contains(log, bad) || !strings.Contains(log, "cannot be decrypted") {
		t.Errorf("worker log does not name the skipped channel %s:\n%s", bad, log)
	} else if strings.Contains(log, badKey) || strings.Contains(log, goodKey) {
		t.Errorf("worker log holds an upstream key:\n%s", log)
	}
	var ch struct {
		Enabled        bool   `json:"enabled"`
		DisabledReason string `json:"disabled_reason"`
	}
	s.admin(http.MethodGet, "/admin/v1/channels/"+bad, nil, &ch)
	if !strings.Contains(ch.DisabledReason, "cannot be decrypted") {
		t.Errorf("admin view of the unreadable channel: %+v, want a disabled_reason saying so", ch)
	}
	var list struct {
		Data []json.RawMessage `json:"data"`
	}
	s.admin(http.MethodGet, "/admin/v1/channels", nil, &list)
	if len(list.Data) != 2 {
		t.Errorf("admin channel list has %d channels, want both", len(list.Data))
	}
}

// newEncryptionKey returns a fresh SLUICE_ENCRYPTION_KEY value.
func newEncryptionKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// TestEncryptionKeysOldSetting_Issue9_19: both binaries read SLUICE_ENCRYPTION_KEYS_OLD, and
// refuse to start with a bad old key, naming it by position, never by value.
func TestEncryptionKeysOldSetting_Issue9_19(t *testing.T) {
	t.Parallel()
	current, old1, old2 := newEncryptionKey(t), newEncryptionKey(t), newEncryptionKey(t)
	env := map[string]string{"DATABASE_URL": "postgres://unused", "SLUICE_ENCRYPTION_KEY": current,
		"SLUICE_ADMIN_TOKEN": adminToken, "SLUICE_ENCRYPTION_KEYS_OLD": old1 + ", " + old2 + ","}
	var wcfg worker.Config
	var icfg ingress.Config
	for name, cfg := range map[string]cli.Validator{"worker": &wcfg, "ingress": &icfg} {
		if err := cli.Load(cfg, env); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, got := range map[string]secret.List{"worker": wcfg.EncryptionKeysOld, "ingress": icfg.EncryptionKeysOld} {
		if r := got.Reveal(); len(r) != 2 || r[0] != old1 || r[1] != old2 {
			t.Errorf("%s: SLUICE_ENCRYPTION_KEYS_OLD read as %d keys, want the 2 given", name, len(r))
		}
	}

	const bad = "c2hvcnQta2V5" // base64 of 9 bytes
	wcfg.EncryptionKeysOld = secret.List{secret.Secret(old1), bad}
	icfg.EncryptionKeysOld = wcfg.EncryptionKeysOld
	log := slog.New(slog.DiscardHandler)
	for name, run := range map[string]func() error{
		"worker":  func() error { return worker.Run(context.Background(), wcfg, log, worker.Options{}) },
		"ingress": func() error { return ingress.Run(context.Background(), icfg, log, ingress.Options{}) },
	} {
		err := run()
		if err == nil || !strings.Contains(err.Error(), "SLUICE_ENCRYPTION_KEYS_OLD") || !strings.Contains(err.Error(), "#2") {
			t.Errorf("%s with a bad second old key: err = %v, want it named", name, err)
		} else if strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), old1) {
			t.Errorf("%s: error %q quotes a key", name, err)
		}
	}
}
