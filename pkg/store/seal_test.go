package store_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/store"
)

func newKeyB64(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

func newSealer(t *testing.T, current string, old ...string) *store.Sealer {
	t.Helper()
	s, err := store.NewSealer(current, old...)
	if err != nil {
		t.Fatalf("NewSealer: %v", err)
	}
	return s
}

// legacySeal seals plaintext as Sealer did before key ids: nonce || ciphertext || tag, no
// additional data.
func legacySeal(t *testing.T, keyB64, plaintext string) []byte {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return aead.Seal(nonce, nonce, []byte(plaintext), nil)
}

func TestSealCarriesKeyID_Issue9_19(t *testing.T) {
	t.Parallel()
	s := newSealer(t, newKeyB64(t))
	a, b := s.Seal("sk-upstream"), s.Seal("sk-upstream")
	if string(a) == string(b) {
		t.Error("two seals of one value are equal, want a fresh nonce each")
	}
	id, err := hex.DecodeString(s.KeyID())
	if err != nil || len(id) != 4 {
		t.Fatalf("KeyID() = %q, want 8 hex digits", s.KeyID())
	}
	if a[0] != 1 || string(a[1:5]) != string(id) {
		t.Errorf("sealed value starts % x, want version 1 then key id %s", a[:5], s.KeyID())
	}
	if !s.IsCurrent(a) {
		t.Error("IsCurrent(fresh seal) = false")
	}
	if got, err := s.Open(a); err != nil || got != "sk-upstream" {
		t.Errorf("Open = %q, %v; want sk-upstream", got, err)
	}
	if got, err := s.Open(s.Seal("")); err != nil || got != "" {
		t.Errorf("Open(Seal(\"\")) = %q, %v", got, err)
	}
	// The header is authenticated: any changed byte, the key id included, fails.
	for i := range a {
		bad := append([]byte(nil), a...)
		bad[i] ^= 0x01
		if _, err := s.Open(bad); !errors.Is(err, store.ErrUnsealable) {
			t.Errorf("Open with byte %d flipped: err = %v, want ErrUnsealable", i, err)
		}
	}
	for _, v := range [][]byte{nil, {}, {1}, a[:20]} {
		if _, err := s.Open(v); !errors.Is(err, store.ErrUnsealable) {
			t.Errorf("Open(%d bytes): err = %v, want ErrUnsealable", len(v), err)
		}
	}
}

func TestSealerRotation_Issue9_19(t *testing.T) {
	t.Parallel()
	keyA, keyB := newKeyB64(t), newKeyB64(t)
	a := newSealer(t, keyA)
	underA := a.Seal("secret-a")
	rotating := newSealer(t, keyB, keyA)
	if rotating.KeyID() == a.KeyID() {
		t.Fatal("two random keys have one id")
	}
	if got, err := rotating.Open(underA); err != nil || got != "secret-a" {
		t.Errorf("new key + old key: Open(value under the old) = %q, %v", got, err)
	}
	if rotating.IsCurrent(underA) {
		t.Error("IsCurrent(value under the old key) = true")
	}
	underB := rotating.Seal("secret-b")
	if !rotating.IsCurrent(underB) {
		t.Error("IsCurrent(value sealed while rotating) = false, want it under the new key")
	}
	if got, err := newSealer(t, keyB).Open(underB); err != nil || got != "secret-b" {
		t.Errorf("new key alone: Open(value sealed while rotating) = %q, %v", got, err)
	}
	// Without the old key, its values do not open, and the error names the key id asked
	// for, never a secret.
	_, err := newSealer(t, keyB).Open(underA)
	if !errors.Is(err, store.ErrUnsealable) || !strings.Contains(err.Error(), a.KeyID()) {
		t.Errorf("new key alone: Open(value under the old) err = %v, want ErrUnsealable naming key id %s", err, a.KeyID())
	}
	if strings.Contains(err.Error(), keyA) || strings.Contains(err.Error(), "secret-a") {
		t.Errorf("error %q reveals a secret", err)
	}
	// Old keys are tried whatever their place in the list.
	keyC := newKeyB64(t)
	if got, err := newSealer(t, keyB, keyC, keyA).Open(underA); err != nil || got != "secret-a" {
		t.Errorf("second old key: Open = %q, %v", got, err)
	}
}

func TestOpenValueSealedBeforeKeyIDs_Issue9_19(t *testing.T) {
	t.Parallel()
	keyA, keyB := newKeyB64(t), newKeyB64(t)
	legacy := legacySeal(t, keyA, "sk-from-before")
	for name, s := range map[string]*store.Sealer{
		"the same key":           newSealer(t, keyA),
		"as an old key":          newSealer(t, keyB, keyA),
		"among several old keys": newSealer(t, keyB, newKeyB64(t), keyA),
	} {
		if got, err := s.Open(legacy); err != nil || got != "sk-from-before" {
			t.Errorf("%s: Open(legacy value) = %q, %v", name, got, err)
		}
		if s.IsCurrent(legacy) {
			t.Errorf("%s: IsCurrent(legacy value) = true, want it resealed", name)
		}
	}
	if _, err := newSealer(t, keyB).Open(legacy); !errors.Is(err, store.ErrUnsealable) {
		t.Errorf("another key: Open(legacy value) err = %v, want ErrUnsealable", err)
	}
}

func TestNewSealerRejects_Issue9_19(t *testing.T) {
	t.Parallel()
	good := newKeyB64(t)
	short := base64.StdEncoding.EncodeToString([]byte("only-sixteen-byt"))
	tests := []struct {
		name    string
		current string
		old     []string
		want    string
	}{
		{"current not base64", "not base64!!", nil, "encryption key: not valid base64"},
		{"current too short", short, nil, "encryption key: 16 bytes, want 32"},
		{"empty current", "", nil, "encryption key: 0 bytes"},
		{"second old key bad", good, []string{newKeyB64(t), short}, "old encryption key #2: 16 bytes"},
		{"old key not base64", good, []string{"%%%%"}, "old encryption key #1: not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := store.NewSealer(tt.current, tt.old...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewSealer err = %v, want it to contain %q", err, tt.want)
			}
			for _, k := range append([]string{tt.current}, tt.old...) {
				if k != "" && strings.Contains(err.Error(), k) {
					t.Errorf("error %q quotes a key", err)
				}
			}
		})
	}
	// The current key repeated among the old ones (a common slip mid-rotation) is fine.
	s := newSealer(t, good, good)
	if got, err := s.Open(s.Seal("x")); err != nil || got != "x" {
		t.Errorf("repeated key: Open = %q, %v", got, err)
	}
}
