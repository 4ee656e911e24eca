package ingress

import (
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
)

// uploadReadTimeout is how long an upload's body may take: the server's ReadTimeout (60 s)
// is for ordinary requests, and 200 MB needs more than that on a modest link.
const uploadReadTimeout = 15 * time.Minute

// takeUpload takes one of the upload slots: an upload holds a Postgres connection (its
// COPY) while its body arrives, so at most a quarter of the pool's connections upload at
// once, and one more is answered 503 with Retry-After rather than queued.
func (s *Server) takeUpload() (release func(), err error) {
	if s.uploads == nil {
		return func() {}, nil
	}
	select {
	case s.uploads <- struct{}{}:
		return func() { <-s.uploads }, nil
	default:
		return nil, errOverloaded("Too many uploads in progress; retry shortly.")
	}
}

// fileObject is OpenAI's file object.
func fileObject(f *files.File) map[string]any {
	return map[string]any{"id": f.ID, "object": "file", "bytes": f.Bytes, "created_at": f.CreatedAt.Unix(),
		"filename": f.Filename, "purpose": f.Purpose, "status": "processed", "status_details": nil, "expires_at": nil}
}

// newFileID is "file-" and a time-ordered id, as OpenAI's file ids look.
func newFileID() string { return "file-" + strings.TrimPrefix(ids.New("f"), "f_") }

func errFileNotFound(id string) error {
	return apiError(http.StatusNotFound, "invalid_request_error", "file_not_found", fmt.Sprintf("No such File object: %s", id))
}

// uploadFile serves POST /v1/files: a multipart form with a "purpose" (batch) and a "file",
// in either order. The file is streamed to storage as it arrives; it is checked for
// its limits on the way and refused (and not kept) at the first byte past one.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	release, err := s.takeUpload()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadTimeout))
	r.Body = http.MaxBytesReader(w, r.Body, files.MaxBytes+1<<20) // the form's own parts ride along
	mr, err := r.MultipartReader()
	if err != nil {
		s.writeError(w, r, badRequest("", "The body must be multipart/form-data with a 'file' and a 'purpose'."))
		return
	}
	// field reads a small form field that is not the file.
	field := func(p *multipart.Part) (string, error) {
		b, err := io.ReadAll(io.LimitReader(p, 256))
		return strings.TrimSpace(string(b)), err
	}
	purpose := ""
	// rest reads the parts after the file (the OpenAI SDKs send "file" before "purpose"),
	// still inside the upload's transaction, and refuses the file for a wrong purpose.
	rest := func(f *files.File) error {
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return uploadError(err)
			}
			switch p.FormName() {
			case "purpose":
				if purpose, err = field(p); err != nil {
					return uploadError(err)
				}
			case "file":
				return badRequest("file", "Send one 'file'.")
			}
			_ = p.Close()
		}
		if purpose != files.PurposeBatch {
			return badRequest("purpose", "'purpose' is required and must be \"batch\": this gateway stores files for the Batch API only.")
		}
		f.Purpose = purpose
		return nil
	}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			s.writeError(w, r, badRequest("file", "'file' is required."))
			return
		}
		if err != nil {
			s.writeError(w, r, uploadError(err))
			return
		}
		switch p.FormName() {
		case "purpose":
			if purpose, err = field(p); err != nil {
				s.writeError(w, r, uploadError(err))
				return
			}
			continue
		case "file":
		default:
			_ = p.Close()
			continue
		}
		if purpose != "" && purpose != files.PurposeBatch {
			s.writeError(w, r, badRequest("purpose", "'purpose' must be \"batch\": this gateway stores files for the Batch API only."))
			return
		}
		name := p.FileName()
		if name == "" || !validText(name) || hasControl(name) || len(name) > 512 {
			name = "upload.jsonl"
		}
		stored, err := s.files.Create(r.Context(), files.File{ID: newFileID(), KeyID: key.ID, Filename: name}, p,
			files.Limits{}, rest)
		if err != nil {
			s.writeError(w, r, uploadError(err))
			return
		}
		writeJSON(w, http.StatusOK, fileObject(&stored))
		return
	}
}

// uploadError maps what went wrong while reading or storing an upload.
func uploadError(err error) error {
	if _, ok := errors.AsType[*jobs.APIError](err); ok {
		return err
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		err = files.ErrTooLarge
	}
	switch {
	case errors.Is(err, files.ErrTooLarge):
		return apiError(http.StatusRequestEntityTooLarge, "invalid_request_error", "file_too_large",
			fmt.Sprintf("A batch file is at most %d bytes.", files.MaxBytes))
	case errors.Is(err, files.ErrTooManyLines):
		return badRequest("file", fmt.Sprintf("A batch file holds at most %d lines.", files.MaxLines))
	case errors.Is(err, files.ErrEmpty):
		return badRequest("file", "The file is empty.")
	case errors.Is(err, multipart.ErrMessageTooLarge), strings.Contains(err.Error(), "multipart"):
		return badRequest("", "The multipart body is malformed.")
	}
	return errOverloaded("The file could not be stored; retry shortly.")
}

// listFiles serves GET /v1/files?purpose=&limit=&after=.
func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	limit, err := listLimit(q.Get("limit"), 10_000)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	fs, more, err := s.files.List(r.Context(), key.ID, q.Get("purpose"), q.Get("after"), limit)
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	data := make([]any, 0, len(fs))
	for i := range fs {
		data = append(data, fileObject(&fs[i]))
	}
	writeList(w, data, more, func(i int) string { return fs[i].ID })
}

// listLimit reads a list's limit: 20 if absent, 1 to most.
func listLimit(v string, most int) (int, error) {
	if v == "" {
		return 20, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, badRequest("limit", fmt.Sprintf("'limit' must be between 1 and %d.", most))
	}
	return n, nil
}

// writeList writes an OpenAI list page.
func writeList(w http.ResponseWriter, data []any, more bool, id func(int) string) {
	list := map[string]any{"object": "list", "data": data, "first_id": nil, "last_id": nil, "has_more": more}
	if len(data) > 0 {
		list["first_id"], list["last_id"] = id(0), id(len(data)-1)
	}
	writeJSON(w, http.StatusOK, list)
}

// getFile serves GET /v1/files/{id}.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := s.files.Get(r.Context(), key.ID, r.PathValue("id"))
	if err != nil {
		s.writeFileError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileObject(&f))
}

func (s *Server) writeFileError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, files.ErrNotFound) {
		s.writeError(w, r, errFileNotFound(r.PathValue("id")))
		return
	}
	s.writeError(w, r, errDBUnavailable())
}

// fileContent serves GET /v1/files/{id}/content, streamed one stored chunk at a time.
func (s *Server) fileContent(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := s.files.Get(r.Context(), key.ID, r.PathValue("id"))
	if err != nil {
		s.writeFileError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(f.Bytes, 10))
	if _, err := s.files.WriteTo(r.Context(), w, f.ID); err != nil && r.Context().Err() == nil {
		s.log.WarnContext(r.Context(), "file content cut short", "file_id", f.ID, "err", err)
		panic(http.ErrAbortHandler) // the length promised cannot be kept: end the connection
	}
}

// deleteFile serves DELETE /v1/files/{id}.
func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := s.files.Delete(r.Context(), key.ID, id); err != nil {
		s.writeFileError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
}
