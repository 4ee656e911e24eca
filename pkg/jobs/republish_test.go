package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// answerSetup is an outcomes stream created the way a release before the republication
// created it (no RePublish), then ensured by this one, with a reply Mux on the same server.
func answerSetup(t *testing.T) (*nats.Conn, *jobs.Outcomes, *jobs.Mux) {
	t.Helper()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: jobs.OutcomeStreamName, Subjects: []string{"sluice.outcomes.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	st, err := jobs.EnsureOutcomeStream(ctx, js, jobs.QueueConfig{})
	if err != nil {
		t.Fatalf("update the outcomes stream to republish: %v", err)
	}
	mux, err := jobs.NewMux(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() })
	return nc, jobs.NewOutcomes(nc, js, st, 5*time.Second), mux
}

func answerOutcome(id string, attempt int) store.Outcome {
	now := time.Now().UTC()
	return store.Outcome{JobID: id, Status: store.StatusSucceeded, StatusCode: 200, ChannelID: "ch_1",
		Response: json.RawMessage(`{"id":"chatcmpl-1","choices":[]}`), Usage: &tokens.Usage{PromptTokens: 7, CompletionTokens: 9},
		Charge: true, Job: &store.NewJob{ID: id, KeyID: "key_1", Endpoint: jobs.EndpointChat, Model: "m",
			CreatedAt: now, Deadline: now.Add(time.Minute), Attempt: attempt}}
}

func next(t *testing.T, c <-chan *nats.Msg, within time.Duration) *nats.Msg {
	t.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(within):
		return nil
	}
}

// TestAnswerIsTheStoredOutcome_Issue10: an outcome published for a waiting ingress is
// stored, then republished to the waiter's reply subject, where it reads as the attempt's
// final reply with the whole answer; a second outcome of the job is a duplicate and is not
// republished; the stored one is still found pending by its job id.
func TestAnswerIsTheStoredOutcome_Issue10(t *testing.T) {
	t.Parallel()
	_, out, mux := answerSetup(t)
	ctx := context.Background()
	w := mux.Wait(4)
	defer w.Done()

	o := answerOutcome("job_answer1", 2)
	dup, sent, err := out.PublishAnswer(ctx, &o, nats.Header{jobs.HeaderRequestID: {"req-1"}}, w.Subject)
	if err != nil || dup || !sent {
		t.Fatalf("PublishAnswer = dup %v, republished %v, err %v; want a new, republished outcome", dup, sent, err)
	}
	m := next(t, w.C(), 5*time.Second)
	if m == nil {
		t.Fatal("the stored outcome did not reach the reply subject")
	}
	if m.Header.Get(jobs.HeaderRequestID) != "req-1" {
		t.Errorf("republished headers %v lack the outcome's own", m.Header)
	}
	rep, err := jobs.ParseReply(m)
	if err != nil {
		t.Fatalf("parse the republished outcome: %v", err)
	}
	step := jobs.NewAssembler(false).Add(rep)
	if step.Kind != jobs.StepDone || step.Gap || string(step.Body) != string(o.Response) {
		t.Fatalf("assembled %+v (body %s), want done with the whole answer %s", step, step.Body, o.Response)
	}
	f := step.Final
	if f.JobID != o.JobID || f.Status != o.Status || f.StatusCode != 200 || rep.Attempt != 2 ||
		f.Usage == nil || f.Usage.PromptTokens != 7 || f.Usage.CompletionTokens != 9 {
		t.Errorf("final %+v (attempt %d), want the outcome's status, usage and attempt 2", f, rep.Attempt)
	}

	again := answerOutcome("job_answer1", 3)
	dup, sent, err = out.PublishAnswer(ctx, &again, nil, w.Subject)
	if err != nil || !dup || sent {
		t.Fatalf("second outcome: dup %v, republished %v, err %v; want a duplicate, not republished", dup, sent, err)
	}
	if m := next(t, w.C(), 300*time.Millisecond); m != nil {
		t.Fatalf("a duplicate outcome reached the caller: %s", m.Subject)
	}
	p, err := out.Pending(ctx, "job_answer1")
	if err != nil || p == nil || p.Job.Attempt != 2 {
		t.Fatalf("Pending = %+v, %v; want the first outcome, stored under its answer subject", p, err)
	}
}

// TestAnswerErrorAndPlainFallback_Issue10: a failed outcome's error comes through whole
// (Retry-After included); an outcome for a subject that is not an ingress's reply subject
// is stored under its plain subject and not republished, so its worker replies itself.
func TestAnswerErrorAndPlainFallback_Issue10(t *testing.T) {
	t.Parallel()
	nc, out, mux := answerSetup(t)
	ctx := context.Background()
	w := mux.Wait(4)
	defer w.Done()

	o := answerOutcome("job_answer2", 1)
	e := jobs.NewError(429, "rate_limit_error", "rate_limit_exceeded", "slow down")
	e.RetryAfter = 3
	o.Status, o.StatusCode, o.Response = store.StatusFailed, 429, nil
	o.Error, _ = json.Marshal(e)
	if _, sent, err := out.PublishAnswer(ctx, &o, nil, w.Subject); err != nil || !sent {
		t.Fatalf("PublishAnswer: republished %v, err %v", sent, err)
	}
	m := next(t, w.C(), 5*time.Second)
	if m == nil {
		t.Fatal("no answer")
	}
	rep, err := jobs.ParseReply(m)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.Final; f.Status != store.StatusFailed || f.Error == nil || *f.Error != *e || rep.Data != nil {
		t.Fatalf("final %+v error %+v data %q, want the failure %+v and no body", f, f.Error, rep.Data, e)
	}

	other, err := nc.SubscribeSync("sluice.reply.>")
	if err != nil {
		t.Fatal(err)
	}
	for i, reply := range []string{"_INBOX.abc", "sluice.reply.only", "sluice.reply.a.b.c", ""} {
		o := answerOutcome("job_plain"+string(rune('a'+i)), 1)
		if _, sent, err := out.PublishAnswer(ctx, &o, nil, reply); err != nil || sent {
			t.Errorf("reply %q: republished %v, err %v; want stored under the plain subject only", reply, sent, err)
		}
		if p, err := out.Pending(ctx, o.JobID); err != nil || p == nil {
			t.Errorf("reply %q: Pending = %v, %v; want the outcome", reply, p, err)
		}
	}
	if m, err := other.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("an outcome without a valid reply subject was republished to %s", m.Subject)
	}
}

// TestOutcomeJobID_Issue10 reads the job id from both forms of outcome subject.
func TestOutcomeJobID_Issue10(t *testing.T) {
	t.Parallel()
	for subject, want := range map[string]string{
		"sluice.outcomes.job_1":             "job_1",
		"sluice.outcomes.job_2.r.PROC.WAIT": "job_2",
		"sluice.jobs.key_1":                 "",
	} {
		if got := jobs.OutcomeJobID(subject); got != want {
			t.Errorf("OutcomeJobID(%q) = %q, want %q", subject, got, want)
		}
	}
}

// TestReplyByOutcomeOnTheWire_Issue10: the ingress's request for its answer by outcome
// reaches the worker with the job (as a header, which older workers ignore).
func TestReplyByOutcomeOnTheWire_Issue10(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := jobs.EnsureStream(ctx, js, jobs.QueueConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pub := jobs.NewPublisher(nc, js, 5*time.Second)
	now := time.Now()
	for i, want := range []bool{true, false} {
		j := &jobs.Job{ID: "job_w" + string(rune('a'+i)), KeyID: "key_1", Endpoint: jobs.EndpointChat, Model: "m",
			Body: json.RawMessage(`{}`), CreatedAt: now, Deadline: now.Add(time.Minute), Reply: "sluice.reply.a.b",
			ReplyByOutcome: want}
		if _, err := pub.Publish(ctx, j); err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		got, err := jobs.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		got.SetHeader(m.Header)
		if got.ID != j.ID || got.ReplyByOutcome != want {
			t.Fatalf("job %s sent with ReplyByOutcome %v came back as %s, %v", j.ID, want, got.ID, got.ReplyByOutcome)
		}
	}
}

// TestAnswerFollowsStreamConfig_Issue10: a process of an older release updating the
// outcomes stream without the republication (a rolling upgrade, a rollback) makes the
// worker's outcomes go the plain way again, which its own reply then carries, and wakes the
// ingress's waiters to look in the store for any answer stored meanwhile; the next ensure
// brings it back. A stream already as wanted is not updated at all.
func TestAnswerFollowsStreamConfig_Issue10(t *testing.T) {
	t.Parallel()
	nc, out, mux := answerSetup(t)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := out.WatchConfig()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	w := mux.Wait(4)
	defer w.Done()
	publish := func(id string) bool {
		o := answerOutcome(id, 1)
		_, sent, err := out.PublishAnswer(ctx, &o, nil, w.Subject)
		if err != nil {
			t.Fatal(err)
		}
		return sent
	}
	if !publish("job_cfg1") {
		t.Fatal("not republished with the stream as ensured")
	}
	if m := next(t, w.C(), 5*time.Second); m == nil {
		t.Fatal("no answer")
	}

	woken := mux.Reconnected()
	if _, err := jobs.EnsureOutcomeStream(ctx, js, jobs.QueueConfig{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
		t.Fatal("ensuring a stream already as wanted updated it (and woke every waiter)")
	case <-time.After(300 * time.Millisecond):
	}

	old := jetstream.StreamConfig{Name: jobs.OutcomeStreamName, Subjects: []string{"sluice.outcomes.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}
	if _, err := js.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream's update did not wake the waiters")
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; publish(fmt.Sprintf("job_cfg_old%d", i)); i++ {
		if time.Now().After(deadline) {
			t.Fatal("still answering by outcome 10 s after the republication was removed")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if _, err := jobs.EnsureOutcomeStream(ctx, js, jobs.QueueConfig{}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for i := 0; !publish(fmt.Sprintf("job_cfg_new%d", i)); i++ {
		if time.Now().After(deadline) {
			t.Fatal("not answering by outcome 10 s after the stream was ensured again")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
