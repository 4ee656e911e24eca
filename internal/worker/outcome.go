package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// outcome is how one job run ended: what is recorded, charged and replied.
type outcome struct {
	status    string
	code      int
	body      json.RawMessage
	err       *jobs.APIError
	usage     *tokens.Usage
	charge    bool
	channelID string
	// upstreamModel is the name the channel was called with: priced before the alias.
	upstreamModel string
}

// failed is a failed outcome with e's status.
func failed(e *jobs.APIError) outcome { return failedAs(store.StatusFailed, e) }

// failedAs is an outcome with status (failed or canceled) and e.
func failedAs(status string, e *jobs.APIError) outcome {
	return outcome{status: status, code: e.Status, err: e}
}

// withUsage charges usage, if any, to o, and notes the channel that produced it.
func (o outcome) withUsage(usage *tokens.Usage, channelID string) outcome {
	o.usage, o.charge, o.channelID = usage, usage != nil, channelID
	return o
}

// on notes the channel that o's last attempt was made on (GET /admin/v1/channels/health
// counts a failed job against it).
func (o outcome) on(channelID string) outcome {
	o.channelID = channelID
	return o
}

// ended says how a job whose context ended came out: timeout, cancel or shutdown. A cancel
// (through the API, by a caller who left, or by the ingress ending the answer itself) is
// charged what the upstream had produced: its reported usage, or, once it had started
// answering (streamed something) without reporting any, an estimate. Otherwise only
// reported usage is charged.
func ended(ctx context.Context, job *jobs.Job, res *providers.Result, emitted int, channelID string) outcome {
	cause := context.Cause(ctx)
	reported := reportedUsage(res)
	cancelUsage := func() *tokens.Usage {
		if reported == nil && emitted > 0 {
			return streamUsage(job, res, emitted)
		}
		return reported
	}
	switch {
	case errors.Is(cause, ErrCanceled):
		return failedAs(store.StatusCanceled, jobs.Canceled()).withUsage(cancelUsage(), channelID)
	case errors.Is(cause, ErrClientGone):
		return failedAs(store.StatusCanceled, jobs.ClientGone()).withUsage(cancelUsage(), channelID)
	case errors.Is(cause, ErrShutdown):
		return failed(workerShutdown()).withUsage(reported, channelID)
	default:
		return timedOut(reported, channelID)
	}
}

func workerShutdown() *jobs.APIError {
	return jobs.Overloaded("worker_shutdown", "The worker running this job shut down mid-answer.")
}

// timedOut is the outcome of a job past its deadline, charged what the upstream reported.
func timedOut(usage *tokens.Usage, channelID string) outcome {
	return failed(jobs.Timeout()).withUsage(usage, channelID)
}

// reportedUsage is the usage the upstream reported, or nil.
func reportedUsage(res *providers.Result) *tokens.Usage {
	if res == nil || res.Usage == nil {
		return nil
	}
	return &tokens.Usage{PromptTokens: res.Usage.PromptTokens, CompletionTokens: res.Usage.CompletionTokens}
}

// success is the outcome of an upstream call that answered.
func success(job *jobs.Job, res *providers.Result, emitted int, channelID string) outcome {
	out := outcome{status: store.StatusSucceeded, code: cmp.Or(res.StatusCode, http.StatusOK), body: res.Body,
		charge: true, channelID: channelID}
	switch {
	case job.Stream:
		out.body = nil
		out.usage = streamUsage(job, res, emitted)
	case res.Usage != nil:
		out.usage = reportedUsage(res)
	default:
		out.usage = tokens.Estimate(len(job.Body), 0)
	}
	return out
}

// streamUsage is the upstream's reported usage or, if it reported none, an estimate marked
// as such.
func streamUsage(job *jobs.Job, res *providers.Result, emitted int) *tokens.Usage {
	if u := reportedUsage(res); u != nil {
		return u
	}
	return tokens.Estimate(len(job.Body), emitted)
}

// passThrough returns a caller-fault upstream error with the upstream's status and message.
func passThrough(e *providers.Error) outcome {
	if e.StatusCode == 0 { // not an HTTP status: the upstream's answer was unusable
		return failed(jobs.UpstreamError("bad_upstream_response", jobs.Clean(e.Error())))
	}
	return failed(&jobs.APIError{Status: e.StatusCode, Type: jobs.Clean(cmp.Or(e.Type, "invalid_request_error")),
		Code: jobs.Clean(e.Code), Message: jobs.Clean(e.Message)})
}

// upstreamFailure is the 502 for an upstream that kept failing.
func upstreamFailure(e *providers.Error, attempts int) outcome {
	return failed(jobs.UpstreamFailed(attempts, e.Error()))
}

// outcomeLabel is the metrics label of an upstream error.
func outcomeLabel(e *providers.Error) string {
	switch {
	case e.StatusCode != 0:
		return fmt.Sprintf("%dxx", e.StatusCode/100)
	case errors.Is(e, providers.ErrIdle):
		return "idle"
	case errors.Is(e, providers.ErrFirstByte):
		return "first_byte"
	case errors.Is(e, ErrJobTimeout):
		return "timeout"
	default:
		return "error"
	}
}
