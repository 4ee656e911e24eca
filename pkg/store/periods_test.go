package store_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// TestPeriodStart_Issue15_2: periods start at UTC midnight, on Mondays, on the 1st.
func TestPeriodStart_Issue15_2(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 5, 12, 23, 30, 0, 0, time.FixedZone("x", -3*3600)) // Mon 13 May 02:30 UTC
	tests := []struct {
		period *string
		want   time.Time
	}{
		{nil, time.Time{}},
		{ptr(store.PeriodDaily), time.Date(2030, 5, 13, 0, 0, 0, 0, time.UTC)},
		{ptr(store.PeriodWeekly), time.Date(2030, 5, 13, 0, 0, 0, 0, time.UTC)},
		{ptr(store.PeriodMonthly), time.Date(2030, 5, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		if got := store.PeriodStart(tt.period, now); !got.Equal(tt.want) {
			t.Errorf("PeriodStart(%v) = %v, want %v", tt.period, got, tt.want)
		}
	}
	if got := store.PeriodStart(ptr(store.PeriodWeekly), time.Date(2030, 5, 19, 12, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2030, 5, 13, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("weekly on a Sunday starts %v", got)
	}
	sp := store.Spend{BudgetUSD: ptr(1.0), Period: ptr(store.PeriodDaily), SpentUSD: 5,
		Days: []store.DaySpend{{Day: time.Date(2030, 5, 12, 0, 0, 0, 0, time.UTC), SpentUSD: 4}, {Day: time.Date(2030, 5, 13, 0, 0, 0, 0, time.UTC), SpentUSD: 1}}}
	if got := sp.PeriodSpent(now); got != 1 || !sp.Over(now) || sp.Over(now.Add(24*time.Hour)) {
		t.Errorf("period spend %v over %v/%v", got, sp.Over(now), sp.Over(now.Add(24*time.Hour)))
	}
}
