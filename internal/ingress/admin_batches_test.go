package ingress

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/batches"
)

// TestAdminBatches_Issue12_4: the operator lists every key's batches, shows and cancels one
// (what sluicectl batches calls); the routes need the admin token; a key's own batch API
// shows another key's batch as 404.
func TestAdminBatches_Issue12_4(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	b, err := hs.srv.batches.Create(context.Background(), batches.Batch{ID: "batch_ADMIN1", KeyID: hs.key.ID,
		Kind: batches.KindOpenAI, Endpoint: "/v1/chat/completions", InputFileID: "file-x", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	res, body := hs.admin("GET", "/admin/v1/batches?key_id="+hs.key.ID, nil)
	if res.StatusCode != 200 || !strings.Contains(string(body), b.ID) || !strings.Contains(string(body), `"kind":"openai"`) {
		t.Errorf("list: %d %s", res.StatusCode, body)
	}
	res, body = hs.admin("GET", "/admin/v1/batches?key_id=key_other", nil)
	if res.StatusCode != 200 || strings.Contains(string(body), b.ID) {
		t.Errorf("list of another key: %d %s", res.StatusCode, body)
	}
	res, body = hs.admin("POST", "/admin/v1/batches/"+b.ID+"/cancel", nil)
	var got struct{ Status, KeyID string }
	if res.StatusCode != 200 || json.Unmarshal(body, &got) != nil || got.Status != "cancelling" {
		t.Errorf("cancel: %d %s", res.StatusCode, body)
	}
	res, body = hs.admin("GET", "/admin/v1/batches/batch_none", nil)
	wantError(t, res, body, 404, "", "batch_not_found")
	res, body = hs.do("GET", "/admin/v1/batches", nil, "Authorization", "Bearer "+testKey)
	wantError(t, res, body, 401, "", "")
	res, body = hs.do("GET", "/v1/batches/"+b.ID, nil, "Authorization", "Bearer "+testAllowKey)
	wantError(t, res, body, 404, "", "batch_not_found")
	res, body = hs.do("GET", "/v1/batches/"+b.ID, nil, "Authorization", "Bearer "+testKey)
	if res.StatusCode != 200 || !strings.Contains(string(body), `"status":"cancelling"`) {
		t.Errorf("owner's get: %d %s", res.StatusCode, body)
	}
}
