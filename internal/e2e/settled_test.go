package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
)

// settled waits until every outcome the workers have recorded so far is written to
// Postgres: the outcomes stream is empty (a settler removes an outcome only after its
// commit). An answer reaches its caller once its outcome is durable in the stream, so a
// test that reads the ledger right after an answer waits for this first.
func (s *stack) settled() {
	s.t.Helper()
	nc := jobstest.Connect(s.t, s.wcfg.NATSURL.Reveal())
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	eventually(s.t, 20*time.Second, "every outcome settled in Postgres", func() bool {
		st, err := js.Stream(context.Background(), jobs.OutcomeStreamName)
		if err != nil {
			return false
		}
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
}

// routes waits until the ingress at base serves model to token's key (GET /v1/models lists
// it): an ingress learns of a channel another process created through a NATS notice or its
// next CHANNEL_REFRESH, so a test that sends to a second ingress waits for this first.
func (s *stack) routes(base, token, model string) {
	s.t.Helper()
	eventually(s.t, 20*time.Second, "ingress "+base+" to route "+model, func() bool {
		req, err := http.NewRequest(http.MethodGet, base+"/v1/models", nil)
		if err != nil {
			return false
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := s.http.Do(req)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var list struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&list) != nil {
			return false
		}
		for _, m := range list.Data {
			if m.ID == model {
				return true
			}
		}
		return false
	})
}
