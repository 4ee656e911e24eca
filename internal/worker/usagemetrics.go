package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/store"
)

// otherModel labels usage of a model no channel is configured for, so that a name a client
// made up never becomes a series of its own.
const otherModel = "other"

// usageMetrics count what the ledger charges: tokens and cost by model, and by key when
// METRICS_PER_KEY is set. They are counted where a settlement is applied (after its commit,
// once per job), never per attempt or per delivery, so a redelivery adds nothing.
type usageMetrics struct {
	tokens, keyTokens *prometheus.CounterVec // keyTokens nil unless per key
	cost, keyCost     *prometheus.CounterVec
	known             func(string) bool
}

func newUsageMetrics(opts MetricsOptions) *usageMetrics {
	u := &usageMetrics{known: opts.KnownModelFunc,
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_usage_tokens_total",
			Help: "Tokens charged to the ledger, by model (the name the client asked for; other if no channel serves it) and type (input, output)."},
			[]string{"model", "type"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_usage_cost_usd_total",
			Help: "USD charged to the ledger, by model (as sluice_usage_tokens_total)."}, []string{"model"}),
	}
	if u.known == nil {
		u.known = func(string) bool { return false }
	}
	if opts.PerKey {
		u.keyTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_usage_key_tokens_total",
			Help: "Tokens charged to the ledger, by API key id and type (METRICS_PER_KEY)."}, []string{"key_id", "type"})
		u.keyCost = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_usage_key_cost_usd_total",
			Help: "USD charged to the ledger, by API key id (METRICS_PER_KEY)."}, []string{"key_id"})
	}
	return u
}

func (u *usageMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(u.tokens, u.cost)
	if u.keyTokens != nil {
		reg.MustRegister(u.keyTokens, u.keyCost)
	}
}

// settled counts the charge of o, whose settlement was just applied (store.Finished.Applied)
// at cost: nothing if o was not charged (as FinishJobs, which writes no ledger row then).
// A nil u counts nothing.
func (u *usageMetrics) settled(o *store.Outcome, cost float64) {
	if u == nil || !o.Charge || o.Usage == nil {
		return
	}
	model, keyID := otherModel, ""
	if o.Job != nil {
		keyID = o.Job.KeyID
		if u.known(o.Job.Model) {
			model = o.Job.Model
		}
	}
	in, out := float64(max(o.Usage.PromptTokens, 0)), float64(max(o.Usage.CompletionTokens, 0))
	u.tokens.WithLabelValues(model, "input").Add(in)
	u.tokens.WithLabelValues(model, "output").Add(out)
	u.cost.WithLabelValues(model).Add(max(cost, 0))
	if u.keyTokens != nil && keyID != "" {
		u.keyTokens.WithLabelValues(keyID, "input").Add(in)
		u.keyTokens.WithLabelValues(keyID, "output").Add(out)
		u.keyCost.WithLabelValues(keyID).Add(max(cost, 0))
	}
}
