package ingress

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// usage serves GET /admin/v1/usage?key_id=&team_id=&from=&to=&group_by=model|day|key|team
// &format=json|csv (from/to: Unix seconds or RFC 3339; default the last 30 days).
func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	parse := func(name string, def time.Time) (time.Time, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		t, err := time.Parse(time.RFC3339, v)
		if n, nerr := strconv.ParseInt(v, 10, 64); nerr == nil {
			t, err = time.Unix(n, 0), nil
		}
		if err != nil || t.Unix() < minUnix || t.Unix() > maxUnix {
			return time.Time{}, badRequest(name, fmt.Sprintf("'%s' must be Unix seconds or an RFC 3339 time, in years 1 to 9999.", name))
		}
		return t, nil
	}
	now := time.Now()
	from, err := parse("from", now.AddDate(0, 0, -30))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	to, err := parse("to", now.Add(time.Minute))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	group := q.Get("group_by")
	if group == "" {
		group = "model"
	}
	if !store.ValidUsageGroup(group) {
		s.writeError(w, r, badRequest("group_by", "'group_by' must be model, day, key or team."))
		return
	}
	format := q.Get("format")
	if format != "" && format != "json" && format != "csv" {
		s.writeError(w, r, badRequest("format", "'format' must be json or csv."))
		return
	}
	rows, err := s.store.Usage(r.Context(), store.UsageFilter{KeyID: q.Get("key_id"), TeamID: q.Get("team_id"),
		From: from, To: to}, group)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if format == "csv" {
		writeUsageCSV(w, group, rows)
		return
	}
	if rows == nil {
		rows = []store.UsageRow{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "group_by": group, "from": from.Unix(), "to": to.Unix(),
		"data": rows})
}

// writeUsageCSV writes usage rows as CSV (RFC 4180) with a header row whose first column is
// named after the grouping. A group that a spreadsheet would read as a formula (=, +, -, @)
// is prefixed with a single quote.
func writeUsageCSV(w http.ResponseWriter, group string, rows []store.UsageRow) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="usage-by-`+group+`.csv"`)
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{group, "requests", "prompt_tokens", "completion_tokens", "cost_usd", "cache_hits"})
	for _, u := range rows {
		g := u.Group
		if g != "" && (g[0] == '=' || g[0] == '+' || g[0] == '-' || g[0] == '@') {
			g = "'" + g
		}
		_ = cw.Write([]string{g, strconv.FormatInt(u.Requests, 10), strconv.FormatInt(u.PromptTokens, 10),
			strconv.FormatInt(u.CompletionTokens, 10), strconv.FormatFloat(u.CostUSD, 'f', -1, 64),
			strconv.FormatInt(u.CacheHits, 10)})
	}
	cw.Flush()
}
