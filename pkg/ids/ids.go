// Package ids makes the identifiers Sluice hands out: a prefix and a 26-character,
// time-ordered, Crockford base32 string (48 bits of milliseconds, 80 random bits), so ids
// sort by creation time and keyset pagination needs no extra column.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// New returns prefix + "_" + a new time-ordered id, for example "job_01JD3M9Q…".
func New(prefix string) string {
	return NewAt(prefix, time.Now())
}

// NewAt is New with the given creation time.
func NewAt(prefix string, t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	out := make([]byte, 0, len(prefix)+1+26)
	out = append(out, prefix...)
	out = append(out, '_')
	// 128 bits in 26 base32 digits: the first digit carries the top 3 bits.
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var d [26]byte
	for i := 25; i >= 0; i-- {
		d[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(append(out, d[:]...))
}

// Random returns n random bytes encoded in the same alphabet (5 bits a character, rounded up).
func Random(nbytes int) string {
	b := make([]byte, nbytes)
	_, _ = rand.Read(b)
	out := make([]byte, 0, (nbytes*8+4)/5)
	var acc uint32
	bits := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out = append(out, alphabet[(acc>>bits)&31])
		}
	}
	if bits > 0 {
		out = append(out, alphabet[(acc<<(5-bits))&31])
	}
	return string(out)
}
