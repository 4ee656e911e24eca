package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrUnsealable means a sealed value cannot be opened with any configured key: it was
// sealed under a key that is neither the current one nor an old one, or it was altered.
var ErrUnsealable = errors.New("store: sealed value cannot be opened")

// Sealed value layout. A value made by Seal is
//
//	sealVersion (1 byte) || key id (4 bytes) || nonce (12 bytes) || ciphertext || tag (16 bytes)
//
// with the first five bytes authenticated as GCM additional data, so the key id cannot be
// swapped. Values sealed before key ids existed are nonce || ciphertext || tag with no
// additional data; Open still accepts them, trying each configured key.
const (
	sealVersion = 0x01
	keyIDLen    = 4
	headerLen   = 1 + keyIDLen
)

// keyIDLabel is what a key id is the HMAC of, under the key itself: the id names a key
// without revealing anything usable about it.
const keyIDLabel = "sluice sealer key id v1"

type sealKey struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

// Sealer encrypts small secrets (upstream API keys, webhook secrets) with AES-256-GCM under
// the current key, and opens values sealed under the current key or any old key, so that
// the key can be rotated: configure the new key as current and the previous one as old,
// reseal (Store.Reseal), then drop the old key. It is safe for concurrent use.
type Sealer struct {
	keys []sealKey // keys[0] is the current key; the rest are old keys, in the order given
}

// NewSealer returns a Sealer whose current key is current and which also opens values
// sealed under any of old. Each key is 32 bytes, base64-encoded. It fails if a key is not
// valid base64 or not exactly 32 bytes (the error names which key, never its value), or if
// two different keys share a key id. An old key equal to the current one is ignored.
func NewSealer(current string, old ...string) (*Sealer, error) {
	s := &Sealer{}
	var raw [][]byte // the decoded keys, beside s.keys, to tell a repeated key from an id clash
	for i, k := range append([]string{current}, old...) {
		name := "encryption key"
		if i > 0 {
			name = fmt.Sprintf("old encryption key #%d", i)
		}
		key, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("%s: not valid base64", name) // not err: it quotes the input
		}
		if len(key) != 32 {
			return nil, fmt.Errorf("%s: %d bytes, want 32", name, len(key))
		}
		sk, err := newSealKey(key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if j := s.index(sk.id); j >= 0 {
			if hmac.Equal(raw[j], key) {
				continue // the same key given twice
			}
			return nil, fmt.Errorf("%s has the same key id as another key", name)
		}
		s.keys = append(s.keys, sk)
		raw = append(raw, key)
	}
	return s, nil
}

func newSealKey(key []byte) (sealKey, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return sealKey{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return sealKey{}, err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(keyIDLabel))
	sk := sealKey{aead: aead}
	copy(sk.id[:], mac.Sum(nil))
	return sk, nil
}

// index returns the position of the key with id, or -1.
func (s *Sealer) index(id [keyIDLen]byte) int {
	for i := range s.keys {
		if s.keys[i].id == id {
			return i
		}
	}
	return -1
}

// KeyID returns the current key's id in hex (8 characters). It is stored in every value
// Seal makes and names the key in logs; it reveals nothing usable about the key.
func (s *Sealer) KeyID() string { return hex.EncodeToString(s.keys[0].id[:]) }

// Seal encrypts plaintext under the current key.
func (s *Sealer) Seal(plaintext string) []byte {
	k := &s.keys[0]
	n := k.aead.NonceSize()
	out := make([]byte, headerLen+n, headerLen+n+len(plaintext)+k.aead.Overhead())
	out[0] = sealVersion
	copy(out[1:headerLen], k.id[:])
	_, _ = rand.Read(out[headerLen:])
	return k.aead.Seal(out, out[headerLen:], []byte(plaintext), out[:headerLen])
}

// IsCurrent reports whether sealed carries the current key's id, so resealing it would
// change nothing. It does not check that the value opens.
func (s *Sealer) IsCurrent(sealed []byte) bool {
	return len(sealed) >= headerLen && sealed[0] == sealVersion && bytes.Equal(sealed[1:headerLen], s.keys[0].id[:])
}

// Open decrypts a value made by Seal under the current or an old key, or a value sealed
// before key ids existed under any of them. It returns an error wrapping ErrUnsealable if
// no configured key opens it (another key, or a value that was altered); the error names
// the key id the value asks for, never any secret.
func (s *Sealer) Open(sealed []byte) (string, error) {
	var wantID []byte
	if len(sealed) >= headerLen && sealed[0] == sealVersion {
		var id [keyIDLen]byte
		copy(id[:], sealed[1:headerLen])
		if i := s.index(id); i >= 0 {
			if pt, ok := open(s.keys[i].aead, sealed[headerLen:], sealed[:headerLen]); ok {
				return pt, nil
			}
		} else {
			wantID = id[:]
		}
	}
	// A value from before key ids (or, with odds of 2^-40, one whose random nonce happens
	// to look like a header).
	for i := range s.keys {
		if pt, ok := open(s.keys[i].aead, sealed, nil); ok {
			return pt, nil
		}
	}
	if wantID != nil {
		return "", fmt.Errorf("%w: sealed under key id %x, which is not configured", ErrUnsealable, wantID)
	}
	return "", fmt.Errorf("%w: no configured key opens it (another key, or altered)", ErrUnsealable)
}

// open opens nonce || ciphertext || tag with additional data ad.
func open(aead cipher.AEAD, v, ad []byte) (string, bool) {
	n := aead.NonceSize()
	if len(v) < n+aead.Overhead() {
		return "", false
	}
	pt, err := aead.Open(nil, v[:n], v[n:], ad)
	if err != nil {
		return "", false
	}
	return string(pt), true
}
