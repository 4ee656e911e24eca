package ingress

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/webhook"
)

// The operator's view of jobs (the console's jobs browser): every key's, batch lines
// included, with the key, the channel that served each and its batch.

// adminJobObject is API.md's job object with the fields only the operator sees.
type adminJobObject struct {
	*webhook.JobObject
	KeyID     string  `json:"key_id"`
	ChannelID *string `json:"channel_id"`
	BatchID   *string `json:"batch_id"`
	CustomID  *string `json:"custom_id"`
}

func newAdminJobObject(j *store.AdminJob) adminJobObject {
	return adminJobObject{JobObject: jobObject(&j.Job), KeyID: j.KeyID, ChannelID: j.ChannelID, BatchID: j.BatchID,
		CustomID: j.CustomID}
}

// adminListJobs serves GET /admin/v1/jobs?key_id=&status=&model=&batch_id=&limit=&after=:
// jobs newest first, without their response bodies.
func (s *Server) adminListJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.JobFilter{KeyID: q.Get("key_id"), Status: q.Get("status"), Model: q.Get("model"),
		BatchID: q.Get("batch_id"), After: q.Get("after")}
	switch f.Status {
	case "", store.StatusQueued, store.StatusRunning, store.StatusSucceeded, store.StatusFailed, store.StatusCanceled:
	default:
		s.writeError(w, r, badRequest("status", "'status' must be queued, running, succeeded, failed or canceled."))
		return
	}
	if f.After != "" && !strings.HasPrefix(f.After, "job_") {
		s.writeError(w, r, badRequest("after", "'after' must be a job id."))
		return
	}
	var err error
	if f.Limit, err = listLimit(q.Get("limit"), 100); err != nil {
		s.writeError(w, r, err)
		return
	}
	release, err := s.takeRead(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(r.Context(), adminQueryTimeout)
	defer cancel()
	rows, more, err := s.store.AdminJobs(ctx, f)
	if err != nil {
		s.writeAdminQueryError(w, r, err)
		return
	}
	data := make([]any, 0, len(rows))
	for i := range rows {
		data = append(data, newAdminJobObject(&rows[i]))
	}
	writeList(w, data, more, func(i int) string { return rows[i].ID })
}

// adminGetJob serves GET /admin/v1/jobs/{id}: one job of any key, with its answer.
func (s *Server) adminGetJob(w http.ResponseWriter, r *http.Request) {
	release, err := s.takeRead(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	id := r.PathValue("id")
	j, err := s.store.AdminJob(r.Context(), id)
	if err != nil {
		s.writeJobError(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, newAdminJobObject(&j))
}

// adminQueryTimeout bounds an admin listing that may scan many rows (a filter on model or
// status of every key's jobs, a channel's last hour): past it the caller is told to narrow it.
const adminQueryTimeout = 10 * time.Second

// writeAdminQueryError answers a failed admin listing: one cut by adminQueryTimeout as a 503
// that says how to narrow it, others as any store error.
func (s *Server) writeAdminQueryError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
		s.writeError(w, r, errOverloaded(fmt.Sprintf("The query ran past %s; narrow it (key_id or batch_id select by index).",
			adminQueryTimeout)))
		return
	}
	s.writeJobError(w, r, "", err)
}
