package e2e

import (
	"context"
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
