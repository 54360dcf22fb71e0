package workflow

// The cron computation below mirrors nats-server's server/cron.go
// (v2.15.2, itself based on github.com/robfig/cron, MIT licence), which
// is not exported: the server fires the schedules, so jetflow must
// compute the same next fire times to show them (jetflow schedules) and
// to name a fire from the server's Nats-Schedule-Next header. Keep the
// two in step when the server is upgraded (no test compares the two
// parsers directly: the server's is unexported).

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// cronSpec is a parsed 6-field cron pattern: one bit per allowed value.
type cronSpec struct {
	second, minute, hour, dom, month, dow uint64
}

type cronBounds struct {
	min, max uint
	names    map[string]uint
}

var (
	cronSeconds = cronBounds{0, 59, nil}
	cronMinutes = cronBounds{0, 59, nil}
	cronHours   = cronBounds{0, 23, nil}
	cronDom     = cronBounds{1, 31, nil}
	cronMonths  = cronBounds{1, 12, map[string]uint{
		"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
	}}
	cronDow = cronBounds{0, 6, map[string]uint{
		"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
	}}
)

// cronStar marks a field written with '*' or '?' (day matching treats a
// star in either day field as "both must match").
const cronStar = 1 << 63

// cronMacros are the predefined patterns the server accepts.
var cronMacros = map[string]string{
	"@yearly":   "0 0 0 1 1 *",
	"@annually": "0 0 0 1 1 *",
	"@monthly":  "0 0 0 1 * *",
	"@weekly":   "0 0 0 * * 0",
	"@daily":    "0 0 0 * * *",
	"@midnight": "0 0 0 * * *",
	"@hourly":   "0 0 * * * *",
}

func parseCron(pattern string) (cronSpec, error) {
	if p, ok := cronMacros[pattern]; ok {
		pattern = p
	}
	fields := strings.Fields(pattern)
	if len(fields) != 6 {
		return cronSpec{}, fmt.Errorf("a cron pattern has 6 fields (second minute hour day-of-month month day-of-week), got %d", len(fields))
	}
	var s cronSpec
	var err error
	for i, f := range []struct {
		dst *uint64
		b   cronBounds
		n   string
	}{{&s.second, cronSeconds, "second"}, {&s.minute, cronMinutes, "minute"}, {&s.hour, cronHours, "hour"}, {&s.dom, cronDom, "day-of-month"}, {&s.month, cronMonths, "month"}, {&s.dow, cronDow, "day-of-week"}} {
		if *f.dst, err = cronField(fields[i], f.b); err != nil {
			return cronSpec{}, fmt.Errorf("%s field %q: %v", f.n, fields[i], err)
		}
	}
	return s, nil
}

func cronField(field string, b cronBounds) (uint64, error) {
	var bits uint64
	for _, expr := range strings.FieldsFunc(field, func(r rune) bool { return r == ',' }) {
		bit, err := cronRange(expr, b)
		if err != nil {
			return 0, err
		}
		bits |= bit
	}
	if bits&^cronStar == 0 {
		return 0, errors.New("selects no value")
	}
	return bits, nil
}

func cronRange(expr string, b cronBounds) (uint64, error) {
	rangeAndStep := strings.Split(expr, "/")
	lowHigh := strings.Split(rangeAndStep[0], "-")
	single := len(lowHigh) == 1
	var start, end, step uint
	var extra uint64
	var err error
	if lowHigh[0] == "*" || lowHigh[0] == "?" {
		start, end, extra = b.min, b.max, cronStar
	} else {
		if start, err = cronInt(lowHigh[0], b.names); err != nil {
			return 0, err
		}
		switch len(lowHigh) {
		case 1:
			end = start
		case 2:
			if end, err = cronInt(lowHigh[1], b.names); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("too many hyphens in %q", expr)
		}
	}
	switch len(rangeAndStep) {
	case 1:
		step = 1
	case 2:
		if step, err = cronInt(rangeAndStep[1], nil); err != nil {
			return 0, err
		}
		if single {
			end = b.max // "N/step" means "N-max/step"
		}
		if step > 1 {
			extra = 0
		}
	default:
		return 0, fmt.Errorf("too many slashes in %q", expr)
	}
	switch {
	case start < b.min:
		return 0, fmt.Errorf("%d is below the minimum %d", start, b.min)
	case end > b.max:
		return 0, fmt.Errorf("%d is above the maximum %d", end, b.max)
	case start > end:
		return 0, fmt.Errorf("range %q starts after it ends", expr)
	case step == 0:
		return 0, fmt.Errorf("step of %q must be positive", expr)
	}
	var bits uint64
	if step == 1 {
		bits = ^(math.MaxUint64 << (end + 1)) & (math.MaxUint64 << start)
	} else {
		for i := start; i <= end; i += step {
			bits |= 1 << i
		}
	}
	return bits | extra, nil
}

func cronInt(s string, names map[string]uint) (uint, error) {
	if n, ok := names[strings.ToLower(s)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return uint(n), nil
}

// errCronRange: no fire time within five years of the start.
var errCronRange = errors.New("the pattern matches no time within five years")

// next is the first time after t (at least the next whole second) that
// the pattern matches, in loc: the server's parseCron.
func (c cronSpec) next(t time.Time, loc *time.Location) (time.Time, error) {
	next := t.In(loc).Truncate(time.Second).Add(time.Second)
	truncated := false
	yearLimit := next.Year() + 5
WRAP:
	if next.Year() > yearLimit {
		return time.Time{}, errCronRange
	}
	for (1<<uint(next.Month()))&c.month == 0 {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), 1, 0, 0, 0, 0, loc)
		}
		if next = next.AddDate(0, 1, 0); next.Month() == time.January {
			goto WRAP
		}
	}
	for !c.dayMatches(next) {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), next.Day(), 0, 0, 0, 0, loc)
		}
		if next = next.AddDate(0, 0, 1); next.Day() == 1 {
			goto WRAP
		}
	}
	for (1<<uint(next.Hour()))&c.hour == 0 {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), next.Day(), next.Hour(), 0, 0, 0, loc)
		}
		if next = next.Add(time.Hour); next.Hour() == 0 {
			goto WRAP
		}
	}
	for (1<<uint(next.Minute()))&c.minute == 0 {
		if !truncated {
			truncated = true
			next = next.Truncate(time.Minute)
		}
		if next = next.Add(time.Minute); next.Minute() == 0 {
			goto WRAP
		}
	}
	for (1<<uint(next.Second()))&c.second == 0 {
		if !truncated {
			truncated = true
			next = next.Truncate(time.Second)
		}
		if next = next.Add(time.Second); next.Second() == 0 {
			goto WRAP
		}
	}
	return next, nil
}

func (c cronSpec) dayMatches(t time.Time) bool {
	domMatch := (1<<uint(t.Day()))&c.dom > 0
	dowMatch := (1<<uint(t.Weekday()))&c.dow > 0
	if c.dom&cronStar > 0 || c.dow&cronStar > 0 {
		return domMatch && dowMatch
	}
	return domMatch || dowMatch
}
