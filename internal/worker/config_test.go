package worker

import (
	"slices"
	"strings"
	"testing"

	"github.com/caarlos0/env/v10"
)

// TestResponsesHostsSetting_Issue11: UPSTREAM_RESPONSES_HOSTS defaults to OpenAI's own
// host, takes hosts and host:port pairs, "none" for no host, and refuses what is not a
// host; RESPONSES_RECAP_MAX_BYTES is range-checked.
func TestResponsesHostsSetting_Issue11(t *testing.T) {
	t.Parallel()
	tests := []struct {
		hosts, recap string
		want         []string
		bad          string // a word the error must hold
	}{
		{"", "", []string{"api.openai.com"}, ""},
		{"api.openai.com,vllm.internal:8000,[::1]:9000", "", []string{"api.openai.com", "vllm.internal:8000", "[::1]:9000"}, ""},
		{"none", "", nil, ""},
		{"https://api.openai.com/v1", "", nil, "UPSTREAM_RESPONSES_HOSTS"},
		{"host:0", "", nil, "UPSTREAM_RESPONSES_HOSTS"},
		{"", "100", nil, "RESPONSES_RECAP_MAX_BYTES"},
	}
	for _, tt := range tests {
		var c Config
		err := env.ParseWithOptions(&c, env.Options{Environment: map[string]string{
			"DATABASE_URL": "postgres://localhost/x", "SLUICE_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
			"UPSTREAM_RESPONSES_HOSTS": tt.hosts, "RESPONSES_RECAP_MAX_BYTES": tt.recap}})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if tt.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tt.bad) {
				t.Errorf("%q/%q: Validate() = %v, want an error naming %s", tt.hosts, tt.recap, err, tt.bad)
			}
			continue
		}
		if err != nil && strings.Contains(err.Error(), "RESPONSES") {
			t.Errorf("%q: Validate() = %v", tt.hosts, err)
		}
		if got := c.nativeResponsesHosts(); !slices.Equal(got, tt.want) {
			t.Errorf("%q: hosts = %q, want %q", tt.hosts, got, tt.want)
		}
	}
}
