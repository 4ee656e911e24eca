package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/jsonscan"
)

// The admin routes read their bodies through one strict decoder, so that every handler
// refuses bad input the same way before any of it reaches Postgres (where it would be a
// data error: a 500 caused by the client). A body is a JSON object, valid UTF-8, whose
// members are the target struct's fields by their exact json names, each at most once. No
// string anywhere holds NUL, and null appears only as the value of a field declared
// nullable[T]. A numeric field may declare its range with a tag, `range:"min,max"`; the
// bounds follow the column it is stored in.

// nullable tells "absent" (Set false) from "null" (Set, Value nil) from a value. It is the
// only field type the strict decoder lets be null.
type nullable[T any] struct {
	Set   bool
	Value *T
}

// UnmarshalJSON implements json.Unmarshaler.
func (n *nullable[T]) UnmarshalJSON(b []byte) error {
	n.Set = true
	if string(b) == "null" {
		n.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	n.Value = &v
	return nil
}

func (n *nullable[T]) acceptsNull() {}

// nullAccepter marks the field types that may be null.
type nullAccepter interface{ acceptsNull() }

// strictField is one member a body may have.
type strictField struct {
	index    int
	nullable bool
	ranged   bool
	min, max float64
}

var strictFieldsCache sync.Map // reflect.Type → map[string]strictField

// strictFields reads the json names and range tags of struct type t. A malformed range
// tag is a programming error, so it panics (the first request through that type shows it).
func strictFields(t reflect.Type) map[string]strictField {
	if m, ok := strictFieldsCache.Load(t); ok {
		return m.(map[string]strictField)
	}
	m := map[string]strictField{}
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "" || name == "-" || !sf.IsExported() {
			continue
		}
		f := strictField{index: i, nullable: reflect.PointerTo(sf.Type).Implements(reflect.TypeFor[nullAccepter]())}
		if tag := sf.Tag.Get("range"); tag != "" {
			lo, hi, ok := strings.Cut(tag, ",")
			var err1, err2 error
			f.min, err1 = strconv.ParseFloat(lo, 64)
			f.max, err2 = strconv.ParseFloat(hi, 64)
			if !ok || err1 != nil || err2 != nil {
				panic(fmt.Sprintf("ingress: bad range tag %q on %s.%s", tag, t.Name(), sf.Name))
			}
			f.ranged = true
		}
		m[name] = f
	}
	strictFieldsCache.Store(t, m)
	return m
}

// decodeStrict decodes the JSON object b into v, a pointer to a struct, by the rules above.
// Every refusal is a 400 *jobs.APIError naming the member at fault.
func decodeStrict(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return badRequest("", "The body must be a JSON object.")
	}
	if !utf8.Valid(b) {
		return badRequest("", "The body must be valid UTF-8.")
	}
	if !json.Valid(b) {
		var x any
		return badRequest("", "We could not parse the JSON body of your request: "+jsonProblem(json.Unmarshal(b, &x)))
	}
	rv := reflect.ValueOf(v).Elem()
	fields := strictFields(rv.Type())
	seen := make(map[string]bool, len(fields))
	var bad error
	_ = jsonscan.Members(b, func(k, raw []byte) bool { // an object: checked above
		bad = decodeMember(rv, fields, seen, string(k), raw)
		return bad == nil
	})
	return bad
}

func decodeMember(rv reflect.Value, fields map[string]strictField, seen map[string]bool, name string, raw []byte) error {
	f, ok := fields[name]
	switch {
	case !ok:
		if len(name) > 64 || !validText(name) || hasControl(name) {
			return badRequest("", "The body has an unknown member.")
		}
		return badRequest(name, fmt.Sprintf("Unknown parameter '%s'.", name))
	case seen[name]:
		return badRequest(name, fmt.Sprintf("'%s' is given more than once.", name))
	case string(raw) == "null" && !f.nullable:
		return badRequest(name, fmt.Sprintf("'%s' must not be null.", name))
	}
	seen[name] = true
	if problem := checkStrings(raw); problem != "" {
		return badRequest(name, fmt.Sprintf("'%s' %s.", name, problem))
	}
	dst := rv.Field(f.index)
	if err := json.Unmarshal(raw, dst.Addr().Interface()); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && strings.HasPrefix(te.Value, "number") {
			return outOfRange(name, f)
		}
		return badRequest(name, fmt.Sprintf("'%s' has the wrong type.", name))
	}
	if n, ok := numberIn(dst); ok && f.ranged && (n < f.min || n > f.max) {
		return outOfRange(name, f)
	}
	return nil
}

func outOfRange(name string, f strictField) error {
	if !f.ranged {
		return badRequest(name, fmt.Sprintf("'%s' is out of range.", name))
	}
	orNull := ""
	if f.nullable {
		orNull = ", or null"
	}
	format := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	return badRequest(name, fmt.Sprintf("'%s' must be between %s and %s%s.", name, format(f.min), format(f.max), orNull))
}

// checkStrings walks a valid JSON value and describes the first thing in it that no text
// column takes, or a null inside it (null is meaningful only as a member's whole value):
// "" if there is none.
func checkStrings(raw []byte) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return ""
		}
		if err != nil {
			return "is not valid JSON"
		}
		switch t := tok.(type) {
		case json.Delim:
			if t == '{' || t == '[' {
				depth++
			} else {
				depth--
			}
		case string:
			if strings.IndexByte(t, 0) >= 0 {
				return "must not contain NUL characters (\\u0000)"
			}
		case nil:
			if depth > 0 {
				return "must not hold null values"
			}
		}
	}
}

// numberIn returns the number a decoded field holds, through pointers and nullable.
func numberIn(v reflect.Value) (float64, bool) {
	for {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() {
				return 0, false
			}
			v = v.Elem()
		case reflect.Struct:
			if _, ok := v.Addr().Interface().(nullAccepter); !ok {
				return 0, false
			}
			v = v.FieldByName("Value")
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return float64(v.Int()), true
		case reflect.Float32, reflect.Float64:
			return v.Float(), true
		default:
			return 0, false
		}
	}
}

// decodeAdmin reads an admin JSON body into v with decodeStrict, writing the error itself;
// it reports whether the handler may go on.
func (s *Server) decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := s.readBody(w, r)
	if err == nil {
		err = decodeStrict(b, v)
	}
	if err != nil {
		s.writeError(w, r, err)
		return false
	}
	return true
}
