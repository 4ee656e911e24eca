package ingress

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// finishJob records a sync job of key on model that ended with status on channel.
func (hs *harness) finishJob(keyID, model, status, channel string) string {
	hs.t.Helper()
	now := time.Now()
	id := ids.NewAt("job", now)
	o := store.Outcome{JobID: id, Status: status, StatusCode: 200, ChannelID: channel,
		Job: &store.NewJob{ID: id, KeyID: keyID, Endpoint: "/v1/chat/completions", Model: model, CreatedAt: now,
			Deadline: now.Add(time.Minute), Attempt: 1}}
	if status == store.StatusSucceeded {
		o.Response = json.RawMessage(`{"choices":[{"message":{"content":"hi"}}]}`)
		o.Usage, o.Charge = &tokens.Usage{PromptTokens: 5, CompletionTokens: 1}, true
	} else {
		o.StatusCode, o.Error = 502, json.RawMessage(`{"message":"upstream failed","type":"upstream_error"}`)
	}
	if _, err := hs.st.FinishJob(context.Background(), o); err != nil {
		hs.t.Fatal(err)
	}
	return id
}

// TestAdminJobs_Issue14_3: the operator lists every key's jobs newest first, filtered by
// key, status and model, pages through them, and opens one with its answer; a bad filter
// is a 400, an unknown job a 404, and a key's token is refused.
func TestAdminJobs_Issue14_3(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	other, _, err := hs.st.CreateKey(context.Background(), store.KeyParams{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	j1 := hs.finishJob(hs.key.ID, "m", store.StatusSucceeded, hs.channel)
	j2 := hs.finishJob(hs.key.ID, "m-other", store.StatusFailed, hs.channel)
	j3 := hs.finishJob(other.ID, "m", store.StatusSucceeded, hs.channel)
	list := func(query string) []string {
		t.Helper()
		res, body := hs.admin("GET", "/admin/v1/jobs"+query, nil)
		var l struct{ Data []struct{ ID string } }
		if res.StatusCode != 200 || json.Unmarshal(body, &l) != nil {
			t.Fatalf("GET /admin/v1/jobs%s = %d %s", query, res.StatusCode, body)
		}
		var got []string
		for _, j := range l.Data {
			got = append(got, j.ID)
		}
		return got
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{j3, j2, j1}},
		{"?key_id=" + hs.key.ID, []string{j2, j1}},
		{"?status=failed", []string{j2}},
		{"?model=m", []string{j3, j1}},
		{"?key_id=" + other.ID + "&model=m&status=succeeded", []string{j3}},
		{"?limit=2", []string{j3, j2}},
		{"?after=" + j2, []string{j1}},
		{"?batch_id=batch_none", nil},
	} {
		if got := list(tc.query); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("GET /admin/v1/jobs%s = %v, want %v", tc.query, got, tc.want)
		}
	}
	res, body := hs.admin("GET", "/admin/v1/jobs/"+j1, nil)
	var one struct {
		ID, Status string
		KeyID      string  `json:"key_id"`
		ChannelID  *string `json:"channel_id"`
		Usage      *tokens.Usage
		Response   struct {
			StatusCode int             `json:"status_code"`
			Body       json.RawMessage `json:"body"`
		}
	}
	if res.StatusCode != 200 || json.Unmarshal(body, &one) != nil {
		t.Fatalf("GET one: %d %s", res.StatusCode, body)
	}
	if one.ID != j1 || one.KeyID != hs.key.ID || one.ChannelID == nil || *one.ChannelID != hs.channel ||
		one.Usage == nil || one.Usage.PromptTokens != 5 || !strings.Contains(string(one.Response.Body), `"hi"`) {
		t.Errorf("GET one = %s", body)
	}
	res, body = hs.admin("GET", "/admin/v1/jobs?status=done", nil)
	wantError(t, res, body, 400, "status", "")
	res, body = hs.admin("GET", "/admin/v1/jobs?limit=0", nil)
	wantError(t, res, body, 400, "limit", "")
	res, body = hs.admin("GET", "/admin/v1/jobs/job_none", nil)
	wantError(t, res, body, 404, "", "job_not_found")
	res, body = hs.do("GET", "/admin/v1/jobs", nil, "Authorization", "Bearer "+testKey)
	wantError(t, res, body, 401, "", "invalid_admin_token")
}

// TestChannelsHealth_Issue14_4: GET /admin/v1/channels/health sums each channel's recent
// outcomes from Postgres and reports its circuit as the workers see it: closed with no
// worker answering, and open, with the worker named, once a worker's breaker opened.
func TestChannelsHealth_Issue14_4(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	hs.finishJob(hs.key.ID, "m", store.StatusSucceeded, hs.channel)
	hs.finishJob(hs.key.ID, "m", store.StatusSucceeded, hs.channel)
	hs.finishJob(hs.key.ID, "m", store.StatusFailed, hs.channel)
	type health struct {
		Workers []string `json:"workers"`
		Data    []struct {
			ChannelID string   `json:"channel_id"`
			Jobs      int64    `json:"jobs"`
			Failed    int64    `json:"failed"`
			ErrorRate *float64 `json:"error_rate"`
			LastOK    *int64   `json:"last_success_at"`
			Circuit   struct {
				State    string `json:"state"`
				Failures int    `json:"consecutive_failures"`
				Workers  []struct {
					Process string `json:"process"`
				} `json:"workers"`
			} `json:"circuit"`
		} `json:"data"`
	}
	get := func() health {
		t.Helper()
		res, body := hs.admin("GET", "/admin/v1/channels/health", nil)
		var h health
		if res.StatusCode != 200 || json.Unmarshal(body, &h) != nil || len(h.Data) != 1 {
			t.Fatalf("GET health = %d %s", res.StatusCode, body)
		}
		return h
	}
	h := get()
	d := h.Data[0]
	if d.ChannelID != hs.channel || d.Jobs != 3 || d.Failed != 1 || d.ErrorRate == nil || *d.ErrorRate < 0.33 ||
		*d.ErrorRate > 0.34 || d.LastOK == nil || d.Circuit.State != route.CircuitClosed || len(h.Workers) != 0 {
		t.Errorf("health without workers = %+v", h)
	}

	worker := route.NewRouter(hs.st, nil, slog.New(slog.DiscardHandler))
	for range 3 {
		worker.Failed(hs.channel, time.Hour) // open for an hour: no flake on a slow box
	}
	stop, err := worker.ServeCircuits(hs.srv.nc, "w1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if err := hs.srv.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h = get()
	d = h.Data[0]
	if len(h.Workers) != 1 || h.Workers[0] != "w1" || d.Circuit.State != route.CircuitOpen || d.Circuit.Failures != 3 ||
		len(d.Circuit.Workers) != 1 || d.Circuit.Workers[0].Process != "w1" {
		t.Errorf("health with an open breaker = %+v", h)
	}
}
