package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestWholeAnswerIsTheStoredOutcome_Issue10: a whole sync answer reaches the ingress as
// exactly one message on its reply subject, the outcome the outcomes stream republished
// once it had stored it: the worker sends no final of its own. A streamed answer still
// comes as the worker's events and final. Each is answered right and settled once.
func TestWholeAnswerIsTheStoredOutcome_Issue10(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{StreamChunks: 4})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 2, 4)
	key := s.newKey(nil)
	nc := jobstest.Connect(t, s.nats.URL)
	defer nc.Close()
	sub, err := nc.SubscribeSync("sluice.reply.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	var ids []string
	for i, kind := range []string{"sync", "stream", "sync"} {
		r := loadRequest(c, s.base, key.Key, kind, i)
		r.kind = kind
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("%s call: %d %s %v", kind, r.code, r.body, r.err)
		}
		checkAnswer(t, r)
		ids = append(ids, r.hdr.Get("Sluice-Job-Id"))
		// Everything this call's reply subject carried; a final sent after the answer would
		// follow within moments, so a quiet second means there is no more.
		var msgs []*nats.Msg
		for {
			m, err := sub.NextMsg(time.Second)
			if err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		var stored int
		for _, m := range msgs {
			if m.Header.Get("Nats-Stream") == jobs.OutcomeStreamName {
				stored++
			}
			if m.Subject != msgs[0].Subject {
				t.Errorf("%s call: replies on %s and %s", kind, msgs[0].Subject, m.Subject)
			}
		}
		switch kind {
		case "sync":
			if len(msgs) != 1 || stored != 1 {
				t.Errorf("sync call: %d reply messages, %d of them the stored outcome; want exactly the stored outcome", len(msgs), stored)
			}
		case "stream":
			if stored != 0 || len(msgs) < 5 {
				t.Errorf("stream call: %d reply messages, %d of them stored outcomes; want the worker's 4 events, [DONE] and final",
					len(msgs), stored)
			}
		}
	}
	s.settled()
	waitSucceeded(t, s, ids, 20*time.Second)
	exactLedger(t, s, up, ids)
}
