// Package jsonscan reads the top-level members of a JSON object without decoding the rest.
//
// The relay forwards request and answer bodies untouched and needs only a few of their
// fields (model, stream, usage …). Decoding a whole body with encoding/json to read them
// costs reflection, an allocation per member and a deep recursion for nested content; on
// the hot path that was a fifth of the worker's CPU. Members walks the object once, hands
// out sub-slices of the input, and allocates nothing unless a key is written with escapes.
package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// ErrNotObject means the input is valid JSON but not an object.
var ErrNotObject = errors.New("jsonscan: not a JSON object")

// Members calls fn with the key and raw value of each member of the JSON object b, in
// order, until fn returns false. The key is unescaped (compare it as string(key), which
// does not allocate); the value is a sub-slice of b, without surrounding whitespace. A key
// that appears twice is reported twice, so a caller that keeps the last one sees what
// encoding/json would decode into a map.
//
// b must be valid JSON: Members does not check (call json.Valid, or use Object). On
// invalid input it may return an error or report garbage, but it does not panic or loop.
func Members(b []byte, fn func(key, value []byte) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return ErrNotObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return errSyntax
		}
		end := skipString(b, i)
		if end < 0 {
			return errSyntax
		}
		key, err := unquote(b[i:end])
		if err != nil {
			return err
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
		vend := skipValue(b, i)
		if vend < 0 {
			return errSyntax
		}
		if !fn(key, b[i:vend]) {
			return nil
		}
		i = skipSpace(b, vend)
		if i >= len(b) {
			return errSyntax
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return nil
		default:
			return errSyntax
		}
	}
	return errSyntax
}

// Object is Members for input not yet known to be valid: it checks b with json.Valid first.
func Object(b []byte, fn func(key, value []byte) bool) error {
	if !json.Valid(b) {
		return errSyntax
	}
	return Members(b, fn)
}

var errSyntax = errors.New("jsonscan: invalid JSON")

// IsNull reports whether a raw value is absent or the literal null.
func IsNull(v []byte) bool { return len(v) == 0 || string(v) == "null" }

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at b[i] (a quote), or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++ // the escaped byte cannot end the string
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index just past the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end := skipString(b, i)
				if end < 0 {
					return -1
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	default: // number, true, false, null
		start := i
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if i == start {
					return -1
				}
				return i
			}
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
}

// unquote returns the text of a quoted JSON string, unescaping only when it must. Like
// encoding/json, it turns invalid UTF-8 into U+FFFD.
func unquote(q []byte) ([]byte, error) {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return inner, nil
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return nil, errSyntax
	}
	return []byte(s), nil
}

// Elements calls fn with each element of the JSON array b, in order, until fn returns false.
// Like Members, it expects valid JSON and returns ErrNotArray for any other valid value.
func Elements(b []byte, fn func(value []byte) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return ErrNotArray
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil
	}
	for i < len(b) {
		end := skipValue(b, i)
		if end < 0 {
			return errSyntax
		}
		if !fn(b[i:end]) {
			return nil
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return errSyntax
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return nil
		default:
			return errSyntax
		}
	}
	return errSyntax
}

// ErrNotArray means the input is valid JSON but not an array.
var ErrNotArray = errors.New("jsonscan: not a JSON array")
