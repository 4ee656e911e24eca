package ingress

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
)

// multipartUpload builds a POST /v1/files body; fields are written in order (the OpenAI SDKs
// send "file" before "purpose").
func multipartUpload(t *testing.T, fields ...string) (body []byte, contentType string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "file" {
			fw, err := mw.CreateFormFile("file", "in.jsonl")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = fw.Write([]byte(fields[i+1]))
			continue
		}
		_ = mw.WriteField(fields[i], fields[i+1])
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

// TestFilesAPI_Issue12_1: upload (file before or after purpose), get, list, content, delete;
// validation of purpose, emptiness and line count; another key gets 404 for every route.
func TestFilesAPI_Issue12_1(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	auth := func(k string) []string { return []string{"Authorization", "Bearer " + k} }
	content := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}` + "\n" +
		`{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{}}` + "\n"
	upload := func(key string, fields ...string) (*http.Response, []byte) {
		body, ct := multipartUpload(t, fields...)
		return hs.do("POST", "/v1/files", body, append(auth(key), "Content-Type", ct)...)
	}
	var ids []string
	for _, order := range [][]string{{"file", content, "purpose", "batch"}, {"purpose", "batch", "file", content}} {
		res, b := upload(testKey, order...)
		var f struct {
			ID, Object, Purpose, Filename string
			Bytes                         int64
		}
		if res.StatusCode != 200 || json.Unmarshal(b, &f) != nil {
			t.Fatalf("upload: %d %s", res.StatusCode, b)
		}
		if !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Purpose != "batch" || f.Bytes != int64(len(content)) ||
			f.Filename != "in.jsonl" {
			t.Errorf("file object %s", b)
		}
		ids = append(ids, f.ID)
	}
	id := ids[0]
	res, b := hs.do("GET", "/v1/files/"+id+"/content", nil, auth(testKey)...)
	if res.StatusCode != 200 || string(b) != content {
		t.Errorf("content: %d %q", res.StatusCode, b)
	}
	res, b = hs.do("GET", "/v1/files?limit=1", nil, auth(testKey)...)
	var list struct {
		Data    []struct{ ID string }
		HasMore bool `json:"has_more"`
	}
	if res.StatusCode != 200 || json.Unmarshal(b, &list) != nil || len(list.Data) != 1 || list.Data[0].ID != ids[1] || !list.HasMore {
		t.Errorf("list: %d %s", res.StatusCode, b)
	}
	for _, target := range []string{"/v1/files/" + id, "/v1/files/" + id + "/content"} {
		res, b := hs.do("GET", target, nil, auth(testAllowKey)...)
		wantError(t, res, b, 404, "", "file_not_found")
	}
	res, b = hs.do("DELETE", "/v1/files/"+id, nil, auth(testAllowKey)...)
	wantError(t, res, b, 404, "", "file_not_found")
	res, b = hs.do("GET", "/v1/files", nil, auth(testAllowKey)...)
	if res.StatusCode != 200 || strings.Contains(string(b), id) {
		t.Errorf("another key's list shows the file: %s", b)
	}
	res, b = hs.do("DELETE", "/v1/files/"+id, nil, auth(testKey)...)
	if res.StatusCode != 200 || !strings.Contains(string(b), `"deleted":true`) {
		t.Errorf("delete: %d %s", res.StatusCode, b)
	}
	res, b = hs.do("GET", "/v1/files/"+id, nil, auth(testKey)...)
	wantError(t, res, b, 404, "", "file_not_found")

	res, b = upload(testKey, "file", content, "purpose", "fine-tune")
	wantError(t, res, b, 400, "purpose", "")
	res, b = upload(testKey, "file", content)
	wantError(t, res, b, 400, "purpose", "")
	res, b = upload(testKey, "purpose", "batch", "file", "")
	wantError(t, res, b, 400, "file", "")
	res, b = upload(testKey, "purpose", "batch")
	wantError(t, res, b, 400, "file", "")
	res, b = upload(testKey, "purpose", "batch", "file", strings.Repeat("{}\n", 50_001))
	wantError(t, res, b, 400, "file", "")
	res, b = hs.do("POST", "/v1/files", `{"purpose":"batch"}`, append(auth(testKey), "Content-Type", "application/json")...)
	wantError(t, res, b, 400, "", "")
	res, b = hs.do("GET", "/v1/files", nil, auth(testKey)...)
	if n := strings.Count(string(b), `"object":"file"`); res.StatusCode != 200 || n != 1 {
		t.Errorf("after refused uploads the key lists %d files, want 1: %s", n, b)
	}
}
