package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCommands checks each command sends the right request (a real HTTP server records it).
func TestCommands(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, auth string
		body               map[string]any
	}
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = seen{method: r.Method, path: r.URL.RequestURI(), auth: r.Header.Get("Authorization")}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &got.body)
		if strings.Contains(r.URL.Path, "missing") {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"error":{"message":"No key with id \"missing\".","type":"not_found_error"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		args   string
		method string
		path   string
		body   string
	}{
		{"keys create -name ci -budget 10 -models a,b -rpm 60", "POST", "/admin/v1/keys", `{"budget_usd":10,"models":["a","b"],"name":"ci","rpm":60}`},
		{"keys list", "GET", "/admin/v1/keys", ``},
		{"keys revoke key_1", "DELETE", "/admin/v1/keys/key_1", ``},
		{"keys update key_1 -max-concurrency 2", "PATCH", "/admin/v1/keys/key_1", `{"max_concurrency":2}`},
		{"channels create -name oa -provider openai -base-url https://api.openai.com/v1 -api-key sk-x -models gpt-4o -map fast=gpt-4o-mini",
			"POST", "/admin/v1/channels", `{"api_key":"sk-x","base_url":"https://api.openai.com/v1","model_map":{"fast":"gpt-4o-mini"},"models":["gpt-4o"],"name":"oa","provider":"openai"}`},
		{"channels update ch_1 -disabled", "PATCH", "/admin/v1/channels/ch_1", `{"enabled":false}`},
		{"prices set gpt-4o 2.5 10", "PUT", "/admin/v1/prices/gpt-4o", `{"input_usd_per_1m":2.5,"output_usd_per_1m":10}`},
		{"usage -key key_1 -group-by day", "GET", "/admin/v1/usage?group_by=day&key_id=key_1", ``},
		{"batches list -key key_1", "GET", "/admin/v1/batches?key_id=key_1&limit=20", ``},
		{"batches show batch_1", "GET", "/admin/v1/batches/batch_1", ``},
		{"batches cancel batch_1", "POST", "/admin/v1/batches/batch_1/cancel", ``},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		args := append([]string{"-url", srv.URL, "-token", "admintoken"}, strings.Fields(tt.args)...)
		if err := run(context.Background(), args, &out); err != nil {
			t.Fatalf("%s: %v", tt.args, err)
		}
		wantBody := map[string]any(nil)
		if tt.body != "" {
			_ = json.Unmarshal([]byte(tt.body), &wantBody)
		}
		gb, _ := json.Marshal(got.body)
		wb, _ := json.Marshal(wantBody)
		if got.method != tt.method || got.path != tt.path || got.auth != "Bearer admintoken" || string(gb) != string(wb) {
			t.Errorf("%s: sent %s %s %s %s, want %s %s %s", tt.args, got.method, got.path, got.auth, gb, tt.method, tt.path, wb)
		}
	}
	err := run(context.Background(), []string{"-url", srv.URL, "-token", "x", "keys", "get", "missing"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "No key with id") {
		t.Errorf("404: err = %v, want the API's message", err)
	}
	if err := run(context.Background(), []string{"-token", "x", "nonsense"}, io.Discard); err == nil {
		t.Error("unknown command: no error")
	}
}
