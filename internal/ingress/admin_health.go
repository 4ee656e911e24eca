package ingress

import (
	"context"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/pkg/route"
)

// GET /admin/v1/channels/health: each channel's recent outcomes (from Postgres) and its
// circuit breaker in every worker (asked over NATS: the breakers live in the workers'
// memory).

// healthWindow is how far back the outcomes GET /admin/v1/channels/health sums go.
const healthWindow = time.Hour

// How long the circuits request waits for the workers' answers: at most circuitsWait,
// and circuitsQuiet after the last answer (the workers are not counted anywhere).
const (
	circuitsWait  = time.Second
	circuitsQuiet = 300 * time.Millisecond
)

// circuitRank orders states from best to worst, for a channel's state across workers.
var circuitRank = map[string]int{route.CircuitClosed: 0, route.CircuitCooling: 1, route.CircuitHalfOpen: 2, route.CircuitOpen: 3}

type workerCircuit struct {
	Process string `json:"process"`
	route.Circuit
}

type channelCircuit struct {
	// State is the worst of the workers' ("unknown" if the workers could not be asked).
	State    string          `json:"state"`
	Failures int             `json:"consecutive_failures"`
	Until    *int64          `json:"until"`
	Workers  []workerCircuit `json:"workers"`
}

type channelHealthObject struct {
	ChannelID     string         `json:"channel_id"`
	Jobs          int64          `json:"jobs"`
	Succeeded     int64          `json:"succeeded"`
	Failed        int64          `json:"failed"`
	ErrorRate     *float64       `json:"error_rate"`
	LastSuccessAt *int64         `json:"last_success_at"`
	LastFailureAt *int64         `json:"last_failure_at"`
	Circuit       channelCircuit `json:"circuit"`
}

// channelsHealth serves GET /admin/v1/channels/health: for every channel, the jobs that
// ended on it in the last hour, how many failed and when it last succeeded and failed, and
// its circuit in each worker that answered (workers lists them; null if NATS could not be
// asked, when every state reads "unknown").
func (s *Server) channelsHealth(w http.ResponseWriter, r *http.Request) {
	chs, err := s.store.Channels(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	release, err := s.takeRead(r.Context()) // the last hour's jobs: a read like a job listing
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminQueryTimeout)
	hs, err := s.store.ChannelsHealth(ctx, time.Now().Add(-healthWindow))
	cancel()
	release()
	if err != nil {
		s.writeAdminQueryError(w, r, err)
		return
	}
	reports, gerr := route.GatherCircuits(r.Context(), s.nc, circuitsWait, circuitsQuiet)
	if gerr != nil {
		s.log.WarnContext(r.Context(), "gather circuits", "err", gerr)
	}
	byID := map[string]*channelHealthObject{}
	data := make([]*channelHealthObject, 0, len(chs))
	for _, ch := range chs {
		o := &channelHealthObject{ChannelID: ch.ID, Circuit: channelCircuit{State: route.CircuitClosed, Workers: []workerCircuit{}}}
		if gerr != nil {
			o.Circuit.State = "unknown"
		}
		byID[ch.ID] = o
		data = append(data, o)
	}
	unix := func(t *time.Time) *int64 {
		if t == nil {
			return nil
		}
		u := t.Unix()
		return &u
	}
	for _, h := range hs {
		o := byID[h.ChannelID]
		if o == nil {
			continue // a deleted channel
		}
		o.Jobs, o.Succeeded, o.Failed = h.Jobs, h.Succeeded, h.Failed
		if h.Jobs > 0 {
			rate := float64(h.Failed) / float64(h.Jobs)
			o.ErrorRate = &rate
		}
		o.LastSuccessAt, o.LastFailureAt = unix(h.LastSuccessAt), unix(h.LastFailureAt)
	}
	var workers []string
	if gerr == nil {
		workers = []string{}
	}
	for _, rep := range reports {
		workers = append(workers, rep.Process)
		for _, c := range rep.Circuits {
			o := byID[c.ChannelID]
			if o == nil {
				continue
			}
			cc := &o.Circuit
			cc.Workers = append(cc.Workers, workerCircuit{Process: rep.Process, Circuit: c})
			if circuitRank[c.State] > circuitRank[cc.State] {
				cc.State = c.State
			}
			cc.Failures = max(cc.Failures, c.Failures)
			if c.Until != nil && (cc.Until == nil || *c.Until > *cc.Until) {
				cc.Until = c.Until
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "window_s": int(healthWindow.Seconds()),
		"workers": workers, "data": data})
}
