package ingress

import (
	"net/http"

	"github.com/sluicehq/sluice/pkg/batches"
)

// The operator's view of batches (sluicectl batches): every key's, with the key and kind.

// adminBatchObject is the batch object with its key_id and kind (openai or anthropic).
func adminBatchObject(b *batches.Batch) map[string]any {
	o := batches.Object(b)
	o["key_id"], o["kind"] = b.KeyID, b.Kind
	return o
}

// adminListBatches serves GET /admin/v1/batches?key_id=&limit=&after=.
func (s *Server) adminListBatches(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := listLimit(q.Get("limit"), 100)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	bs, more, err := s.batches.List(r.Context(), q.Get("key_id"), "", q.Get("after"), limit)
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	data := make([]any, 0, len(bs))
	for i := range bs {
		data = append(data, adminBatchObject(&bs[i]))
	}
	writeList(w, data, more, func(i int) string { return bs[i].ID })
}

// adminGetBatch serves GET /admin/v1/batches/{id}.
func (s *Server) adminGetBatch(w http.ResponseWriter, r *http.Request) {
	b, err := s.batches.Get(r.Context(), "", r.PathValue("id"))
	if err != nil {
		s.writeBatchError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, adminBatchObject(&b))
}

// adminCancelBatch serves POST /admin/v1/batches/{id}/cancel.
func (s *Server) adminCancelBatch(w http.ResponseWriter, r *http.Request) {
	b, err := s.batches.Cancel(r.Context(), "", r.PathValue("id"))
	if err != nil {
		s.writeBatchError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, adminBatchObject(&b))
}
