package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// channelLimiter holds channels' rpm, tpm and max_concurrency across every worker (in
// Postgres, as the keys' limits are); *store.Store implements it.
type channelLimiter interface {
	TakeRate(ctx context.Context, subject string, lim store.RateLimits, tokens int64, now time.Time) (store.RateState, error)
	ReturnRate(ctx context.Context, subject string, tokens int64, now time.Time) error
	AdjustRate(ctx context.Context, subject string, delta int64, now time.Time) error
	AcquireChannelSlot(ctx context.Context, channelID, callID string, max int, expires time.Time) (bool, error)
	ReleaseChannelSlot(ctx context.Context, callID string) error
}

// paceTimeout bounds each of pace's statements: a slow Postgres must not hold the call.
const paceTimeout = 2 * time.Second

// pace asks the channel's quotas for one call of job before it is sent, so that no call is
// sent that the upstream would refuse with a 429. ok false means the channel has no room
// now and wait is how long until it may: the caller defers the channel (route.Defer) and
// picks again. When ok, done must be called with the call's result once it returns: it frees
// the call's slot and replaces the tokens estimate by the reported usage. If Postgres cannot
// be asked, the call goes ahead unpaced (the upstream's own 429 then still fails over).
func (c *caller) pace(ctx context.Context, log *slog.Logger, job *jobs.Job, rt route.Target) (done func(*providers.Result), wait time.Duration, ok bool) {
	ch := rt.Channel
	noop := func(*providers.Result) {}
	if c.limits == nil || (ch.RPM == nil && ch.TPM == nil && ch.MaxConcurrency == nil) {
		return noop, 0, true
	}
	bg := context.WithoutCancel(ctx)
	now, est := time.Now(), tokens.Admission(len(job.Body))
	lim := store.RateLimits{RPM: ch.RPM, TPM: ch.TPM}
	took := false
	if lim.Any() {
		sctx, cancel := context.WithTimeout(ctx, paceTimeout)
		st, err := c.limits.TakeRate(sctx, ch.ID, lim, est, now)
		cancel()
		switch {
		case err != nil:
			log.WarnContext(ctx, "channel rate window unavailable; calling unpaced", "channel_id", ch.ID, "err", err)
		case !st.OK:
			return nil, st.Wait, false
		default:
			took = true
		}
	}
	callID := ""
	if ch.MaxConcurrency != nil {
		id := ids.New("call")
		expires := now.Add(c.cfg.Queue.JobTimeout)
		if dl, has := ctx.Deadline(); has {
			expires = dl.Add(time.Minute)
		}
		sctx, cancel := context.WithTimeout(ctx, paceTimeout)
		got, err := c.limits.AcquireChannelSlot(sctx, ch.ID, id, *ch.MaxConcurrency, expires)
		cancel()
		switch {
		case err != nil:
			log.WarnContext(ctx, "channel slots unavailable; calling unpaced", "channel_id", ch.ID, "err", err)
		case !got:
			if took { // the window counted a call that is not sent
				_ = c.limits.ReturnRate(bg, ch.ID, est, now)
			}
			return nil, route.BusyRecheck, false
		default:
			callID = id
		}
	}
	return func(res *providers.Result) {
		sctx, cancel := context.WithTimeout(bg, paceTimeout)
		defer cancel()
		if callID != "" {
			if err := c.limits.ReleaseChannelSlot(sctx, callID); err != nil {
				log.WarnContext(ctx, "release channel slot; it expires later", "channel_id", ch.ID, "err", err)
			}
		}
		if took && ch.TPM != nil && res != nil && res.Usage != nil {
			used := res.Usage.PromptTokens + res.Usage.CompletionTokens
			_ = c.limits.AdjustRate(sctx, ch.ID, used-est, time.Now())
		}
	}, 0, true
}
