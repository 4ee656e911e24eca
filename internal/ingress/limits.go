package ingress

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// limit applies the key's rpm, tpm and max_concurrency limits and its team's rpm and tpm to a new job (429
// rate_limit_exceeded with Retry-After when over) and writes OpenAI's x-ratelimit-* headers
// for the limits that apply. A job admitted against a tpm limit counts the estimate
// tokens.Admission of its body, which its settlement corrects to the reported usage
// (job.ReservedTokens tells the worker). A slot taken here is freed when the job's row
// ends, or by the caller with store.ReleaseSlot if the job is never accepted.
func (s *Server) limit(ctx context.Context, w http.ResponseWriter, k *store.Key, job *jobs.Job) error {
	now, est := s.now(), tokens.Admission(len(job.Body))
	lim := k.Rates()
	if lim.Any() {
		st, err := s.store.TakeRate(ctx, k.ID, lim, est, now)
		if err != nil {
			return errDBUnavailable()
		}
		rateHeaders(w.Header(), lim, st)
		if !st.OK {
			return rateError(lim, st, "this API key")
		}
		job.ReservedTokens = lim.TPM != nil
	}
	if t := k.Team; t != nil && t.Rates().Any() {
		tl := t.Rates()
		st, err := s.store.TakeRate(ctx, t.ID, tl, est, now)
		if err == nil {
			rateHeaders(w.Header(), tl, st)
		}
		if err != nil || !st.OK {
			if lim.Any() { // the key's window counted a request that does not run
				_ = s.store.ReturnRate(context.WithoutCancel(ctx), k.ID, est, now)
			}
			if err != nil {
				return errDBUnavailable()
			}
			return rateError(tl, st, "this API key's team")
		}
		job.ReservedTokens = job.ReservedTokens || tl.TPM != nil
	}
	if k.MaxConcurrency != nil {
		// The slot outlives the deadline as long as the worker may still be recording and
		// the sweeper has not yet ended the job (its row's end frees the slot sooner).
		ok, err := s.store.AcquireSlot(ctx, k.ID, job.ID, *k.MaxConcurrency, job.Deadline.Add(s.cfg.Queue().SlotHold()))
		if err != nil {
			return errDBUnavailable()
		}
		if !ok {
			e := apiError(http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded",
				fmt.Sprintf("Concurrency limit reached: this API key may run %d jobs at once.", *k.MaxConcurrency))
			e.RetryAfter = 1
			return e
		}
	}
	return nil
}

// rateError is the 429 of a request refused by who's rpm or tpm.
func rateError(lim store.RateLimits, st store.RateState, who string) error {
	msg := ""
	if st.OverRPM || lim.TPM == nil {
		msg = fmt.Sprintf("Rate limit reached: %s may make %d requests per minute.", who, *lim.RPM)
	} else {
		msg = fmt.Sprintf("Rate limit reached: %s may use %d tokens per minute (used %d).", who, *lim.TPM, st.Tokens)
	}
	e := apiError(http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded", msg)
	e.RetryAfter = int(st.Wait.Round(time.Second).Seconds())
	return e
}

// rateHeaders sets OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens} headers for
// each limit that is set, from the window TakeRate left (the tightest of key and team when
// called for both: a later call only lowers what remains). Reset is a Go duration ("12.5s"),
// as OpenAI writes it: how long until this minute's counts start to age out of the window.
func rateHeaders(h http.Header, lim store.RateLimits, st store.RateState) {
	set := func(kind string, limit int, used int64) {
		remaining := max(int64(limit)-used, 0)
		if old, err := strconv.ParseInt(h.Get("X-Ratelimit-Remaining-"+kind), 10, 64); err == nil && old < remaining {
			return // an earlier, tighter limit stands
		}
		h.Set("X-Ratelimit-Limit-"+kind, strconv.Itoa(limit))
		h.Set("X-Ratelimit-Remaining-"+kind, strconv.FormatInt(remaining, 10))
		h.Set("X-Ratelimit-Reset-"+kind, st.Reset.Round(time.Millisecond).String())
	}
	if lim.RPM != nil {
		set("Requests", *lim.RPM, st.Requests)
	}
	if lim.TPM != nil {
		set("Tokens", *lim.TPM, st.Tokens)
	}
}
