package e2e

import (
	"slices"
	"strings"
	"testing"
)

// promqlWords are the PromQL identifiers that are never metric names: aggregation
// operators (which may be followed by by/without before their parenthesis), the binary
// set operators and modifiers, and the number literals.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true,
	"limit_ratio": true, "and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true,
}

// promqlLabelLists are the keywords followed by a parenthesised list of label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names a PromQL expression selects, in order of first
// appearance: every identifier that is not a function (followed by "("), a keyword, a label
// name (inside {} or a by/without/on/ignoring/group_left/group_right list), part of a
// string, a duration or a Grafana variable ($name, ${name}). It does not validate the
// expression beyond reporting unbalanced brackets as ok=false.
func metricNames(expr string) (names []string, ok bool) {
	s := expr
	i := 0
	depth := 0
	next := func(j int) byte { // the first non-space byte at or after j, or 0
		for j < len(s) && strings.IndexByte(" \t\r\n", s[j]) >= 0 {
			j++
		}
		if j < len(s) {
			return s[j]
		}
		return 0
	}
	skipSpace := func(j int) int {
		for j < len(s) && strings.IndexByte(" \t\r\n", s[j]) >= 0 {
			j++
		}
		return j
	}
	// skipString skips the quoted literal that starts at j and returns the index after it.
	skipString := func(j int) int {
		q := s[j]
		for j++; j < len(s); j++ {
			if s[j] == '\\' && q != '`' {
				j++
				continue
			}
			if s[j] == q {
				return j + 1
			}
		}
		return len(s) + 1 // unterminated
	}
	// skipGroup skips from the opening bracket at j to just after its closing one.
	skipGroup := func(j int, open, close byte) int {
		d := 0
		for j < len(s) {
			switch s[j] {
			case '"', '\'', '`':
				j = skipString(j)
				continue
			case open:
				d++
			case close:
				d--
				if d == 0 {
					return j + 1
				}
			}
			j++
		}
		return len(s) + 1
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isIdent := func(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(i)
		case c == '{':
			i = skipGroup(i, '{', '}')
		case c == '[':
			i = skipGroup(i, '[', ']')
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(s) && s[i] == '{' {
				i = skipGroup(i, '{', '}')
			}
			for i < len(s) && isIdent(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.': // a number or a duration
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := s[i:j]
			switch {
			case promqlLabelLists[strings.ToLower(word)] && next(j) == '(':
				j = skipGroup(skipSpace(j), '(', ')')
			case promqlWords[strings.ToLower(word)], next(j) == '(':
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
			i = j
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return names, false
			}
			i++
		case c == '}' || c == ']':
			return names, false
		default:
			i++
		}
	}
	return names, depth == 0 && i == len(s)
}

// TestMetricNames_Issue14_5: the PromQL tokenizer finds exactly the metric names.
func TestMetricNames_Issue14_5(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr string
		want []string
		ok   bool
	}{
		{`up`, []string{"up"}, true},
		{`sum by (model, type) (rate(sluice_usage_tokens_total{model!~"other|x",type="input"}[$__rate_interval]))`,
			[]string{"sluice_usage_tokens_total"}, true},
		{`histogram_quantile(0.99, sum by (le) (rate(a_bucket{route=~"POST /v1/.*"}[5m])))`, []string{"a_bucket"}, true},
		{`go_goroutines / on (instance, job) sluice_goroutines_bound > 0.8`, []string{"go_goroutines", "sluice_goroutines_bound"}, true},
		{`x and on(instance) group_left(version) y offset 5m`, []string{"x", "y"}, true},
		{`max(q) > 100 and max(deriv(q[10m])) > 0`, []string{"q"}, true},
		{`sum without (le)(rate(a[1h:5m])) unless ignoring(code) b{c="}"}`, []string{"a", "b"}, true},
		{"count(rate(a[5m]) > 1e3) or vector(0)\n and inf > NaN", []string{"a"}, true},
		{`sum by(x)(increase(c_total[${__range}])) * 3600 / bool d`, []string{"c_total", "d"}, true},
		{`sum(rate(a[5m])`, []string{"a"}, false},
		{`a{b="c"`, []string{"a"}, false},
	}
	for _, tt := range tests {
		got, ok := metricNames(tt.expr)
		if !slices.Equal(got, tt.want) || ok != tt.ok {
			t.Errorf("metricNames(%q) = %q, %v; want %q, %v", tt.expr, got, ok, tt.want, tt.ok)
		}
	}
}
