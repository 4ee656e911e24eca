package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Budget periods: a budget with a period applies to the spend since the period began (UTC).
const (
	PeriodDaily   = "daily"
	PeriodWeekly  = "weekly" // from Monday 00:00 UTC
	PeriodMonthly = "monthly"
)

// ValidPeriod reports whether p names a budget period.
func ValidPeriod(p string) bool {
	return p == PeriodDaily || p == PeriodWeekly || p == PeriodMonthly
}

// PeriodStart is when the budget period that holds now began (UTC); the zero time for no
// period (nil: the budget is for the key's whole life).
func PeriodStart(period *string, now time.Time) time.Time {
	if period == nil {
		return time.Time{}
	}
	y, m, d := now.UTC().Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	switch *period {
	case PeriodWeekly:
		return day.AddDate(0, 0, -(int(day.Weekday())+6)%7)
	case PeriodMonthly:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	default:
		return day
	}
}

// DaySpend is what a subject spent on one UTC day.
type DaySpend struct {
	Day      time.Time
	SpentUSD float64
}

// Spend is a key's or team's budget and spend, with the per-day spend of the last 32 days
// (read when it has a budget period), from which the spend of the current period follows at
// any time: a cached Spend stays right when a period rolls over.
type Spend struct {
	BudgetUSD *float64
	// Period is the budget period (PeriodDaily, …) or nil.
	Period *string
	// SpentUSD is the lifetime spend.
	SpentUSD float64
	Days     []DaySpend
}

// PeriodSpent is the spend of the period holding now (the lifetime spend without a period).
func (s *Spend) PeriodSpent(now time.Time) float64 {
	if s.Period == nil {
		return s.SpentUSD
	}
	start := PeriodStart(s.Period, now)
	total := 0.0
	for _, d := range s.Days {
		if !d.Day.Before(start) {
			total += d.SpentUSD
		}
	}
	return total
}

// Over reports whether the spend of the period holding now has reached the budget.
func (s *Spend) Over(now time.Time) bool {
	return s.BudgetUSD != nil && s.PeriodSpent(now) >= *s.BudgetUSD
}

// Charge adds cost to the spend, today's (by now) and the lifetime's.
func (s *Spend) Charge(cost float64, now time.Time) {
	s.SpentUSD += cost
	if s.Period != nil {
		y, m, d := now.UTC().Date()
		s.Days = append(s.Days, DaySpend{Day: time.Date(y, m, d, 0, 0, 0, 0, time.UTC), SpentUSD: cost})
	}
}

// recentDays reads subject's per-day spend of the last 32 days (by Postgres's clock; a
// caller's clock that runs ahead only drops days).
func (s *Store) recentDays(ctx context.Context, subject string) ([]DaySpend, error) {
	rows, err := s.pool.Query(ctx, `SELECT day::timestamp, sum(spent_usd)::float8 FROM spend_days
		WHERE subject = $1 AND day >= (now() AT TIME ZONE 'UTC')::date - 32 GROUP BY day ORDER BY day`, subject)
	if err != nil {
		return nil, fmt.Errorf("read spend of %s: %w", subject, err)
	}
	days, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DaySpend, error) {
		var d DaySpend
		err := r.Scan(&d.Day, &d.SpentUSD)
		d.Day = d.Day.UTC()
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read spend of %s: %w", subject, err)
	}
	return days, nil
}
