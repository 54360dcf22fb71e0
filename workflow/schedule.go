package workflow

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // time zones of schedules resolve without the system's tzdata
)

// Schedule starts an instance of its workflow at every fire time of a cron
// pattern or an interval. The NATS server fires it (a repeating message
// schedule); see docs/schedules.md.
type Schedule struct {
	// Name identifies the schedule within the workflow: letters, digits,
	// '-' and '_'. Required, unique in the definition.
	Name string `yaml:"name"`
	// Cron is when the schedule fires: a 6-field cron pattern with seconds
	// ("0 0 2 * * *": 02:00:00 every day), a macro (@yearly, @annually,
	// @monthly, @weekly, @daily, @midnight, @hourly) or "@every <duration>"
	// with a whole number of seconds, at least 1s ("@every 30s"). Required.
	Cron string `yaml:"cron"`
	// Timezone is the IANA time zone the cron pattern is read in
	// ("Europe/Berlin"). Default: UTC. Not allowed with @every.
	Timezone string `yaml:"timezone,omitempty"`
	// Input is the JSON input of every instance the schedule starts.
	// Default: null.
	Input string `yaml:"input,omitempty"`
	// Overlap is OverlapSkip (default: a fire is skipped while the last
	// instance this schedule started is still running) or OverlapAllow
	// (every fire starts an instance).
	Overlap string `yaml:"overlap,omitempty"`
}

// Schedule overlap policies (Schedule.Overlap).
const (
	OverlapSkip  = "skip"
	OverlapAllow = "allow"
)

// MaxSchedules is how many schedules one definition may have.
const MaxSchedules = 100

// Skips reports whether a fire is skipped while the schedule's last
// instance runs (overlap: skip, the default).
func (s *Schedule) Skips() bool { return s.Overlap == "" || s.Overlap == OverlapSkip }

// InputJSON is the schedule's input as JSON ("null" when none is set).
func (s *Schedule) InputJSON() []byte {
	if strings.TrimSpace(s.Input) == "" {
		return []byte("null")
	}
	return []byte(s.Input)
}

// Spec parses the schedule's cron and time zone.
func (s *Schedule) Spec() (*ScheduleSpec, error) { return ParseScheduleSpec(s.Cron, s.Timezone) }

// Schedule returns the named schedule of the definition.
func (d *Definition) Schedule(name string) (*Schedule, bool) {
	for i := range d.Schedules {
		if d.Schedules[i].Name == name {
			return &d.Schedules[i], true
		}
	}
	return nil, false
}

// ScheduleSpec is a parsed schedule pattern: a cron pattern in a time zone,
// or an interval.
type ScheduleSpec struct {
	pattern string
	zone    string
	loc     *time.Location
	every   time.Duration // > 0 for "@every"
	cron    cronSpec
}

// ParseScheduleSpec parses a schedule pattern (see Schedule.Cron) and an
// optional IANA time zone, accepting exactly what the NATS server accepts
// in Nats-Schedule and Nats-Schedule-Time-Zone, minus one-shot "@at" and
// sub-second intervals.
func ParseScheduleSpec(pattern, zone string) (*ScheduleSpec, error) {
	if len(pattern) > 256 {
		return nil, fmt.Errorf("cron %.20q... is longer than 256 characters", pattern)
	}
	if strings.TrimSpace(pattern) != pattern || pattern == "" {
		return nil, fmt.Errorf("cron %q: empty, or white space around it", pattern)
	}
	sp := &ScheduleSpec{pattern: pattern, zone: zone, loc: time.UTC}
	if zone != "" {
		// LoadLocation also reads files: keep it to zone names.
		if len(zone) > 64 || strings.ContainsAny(zone, " \\\x00") || strings.Contains(zone, "..") || strings.HasPrefix(zone, "/") {
			return nil, fmt.Errorf("unknown time zone %q: use an IANA name such as Europe/Berlin", zone)
		}
		loc, err := time.LoadLocation(zone)
		if err != nil || zone == "Local" {
			return nil, fmt.Errorf("unknown time zone %q: use an IANA name such as Europe/Berlin", zone)
		}
		sp.loc = loc
	}
	if strings.HasPrefix(pattern, "@at") {
		return nil, fmt.Errorf("cron %q: one-shot @at schedules are not supported; use a cron pattern or @every", pattern)
	}
	if rest, ok := strings.CutPrefix(pattern, "@every "); ok {
		if zone != "" {
			return nil, fmt.Errorf("cron %q: a time zone applies to cron patterns only, not to @every", pattern)
		}
		d, err := time.ParseDuration(rest)
		if err != nil {
			return nil, fmt.Errorf("cron %q: invalid interval %q: use a duration such as 30s, 5m or 1h", pattern, rest)
		}
		if d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("cron %q: the interval must be a whole number of seconds, at least 1s", pattern)
		}
		sp.every = d
		return sp, nil
	}
	if strings.HasPrefix(pattern, "@") {
		if _, ok := cronMacros[pattern]; !ok {
			return nil, fmt.Errorf("cron %q: unknown macro (use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>)", pattern)
		}
	}
	c, err := parseCron(pattern)
	if err != nil {
		return nil, fmt.Errorf("cron %q: %v", pattern, err)
	}
	sp.cron = c
	// A pattern that never fires (30 February) is an error now, not a
	// schedule the server silently drops.
	if _, err := c.next(time.Date(2000, 1, 1, 0, 0, 0, 0, sp.loc), sp.loc); err != nil {
		return nil, fmt.Errorf("cron %q: %v", pattern, err)
	}
	return sp, nil
}

// Pattern is the pattern as the server reads it (the Nats-Schedule header).
func (s *ScheduleSpec) Pattern() string { return s.pattern }

// Zone is the time zone name ("" for UTC).
func (s *ScheduleSpec) Zone() string { return s.zone }

// Every is the interval of an "@every" schedule, 0 for cron.
func (s *ScheduleSpec) Every() time.Duration { return s.every }

// Next is the first fire time after t of a cron schedule, as the server
// computes it (at least the next whole second). For "@every" the fire
// times depend on when the schedule was installed, so Next returns t
// plus the interval, rounded to the second, as the server does from the
// last fire time t.
func (s *ScheduleSpec) Next(t time.Time) (time.Time, error) {
	if s.every > 0 {
		return t.UTC().Round(time.Second).Add(s.every), nil
	}
	n, err := s.cron.next(t, s.loc)
	return n.UTC(), err
}

// FireTime names the fire whose Nats-Schedule-Next is next: the server
// sets that header on the message a fire produces to the following fire
// time, so the fire itself is the schedule's last fire time before next:
// next minus the interval for "@every", the last matching time before
// next for cron. After a downtime the server fires once for all the
// missed fire times, and FireTime names the latest of them. It depends
// only on the pattern and next, so every delivery of one fire, and a
// fire produced twice, give the same time.
func (s *ScheduleSpec) FireTime(next time.Time) time.Time {
	next = next.UTC().Truncate(time.Second)
	if s.every > 0 {
		return next.Add(-s.every)
	}
	// The latest match before next: search back in growing windows.
	for w := time.Minute; w < 16*366*24*time.Hour; w *= 4 {
		var last time.Time
		t, err := s.cron.next(next.Add(-w-time.Second), s.loc)
		for err == nil && t.Before(next) {
			last = t
			t, err = s.cron.next(t, s.loc)
		}
		if !last.IsZero() {
			return last.UTC()
		}
	}
	return next // unreachable for a pattern that parses
}

// ScheduleEventKey is the event key of the instance a schedule starts at a
// fire time: "schedule:<name>@<fire time, RFC 3339 UTC>". Its instance id
// is InstanceID(workflow, key), so one fire time starts one instance.
func ScheduleEventKey(schedule string, fire time.Time) string {
	return "schedule:" + schedule + "@" + fire.UTC().Format(time.RFC3339)
}

// ScheduleManualKey is the event key of a run started by hand (jetflow
// schedule trigger) at t; nanoseconds keep two such runs apart.
func ScheduleManualKey(schedule string, t time.Time) string {
	return "schedule:" + schedule + "@manual:" + t.UTC().Format(time.RFC3339Nano)
}

func (d *Definition) validateSchedules() []error {
	var errs []error
	if len(d.Schedules) > MaxSchedules {
		return []error{d.errf("", "%d schedules; at most %d are allowed", len(d.Schedules), MaxSchedules)}
	}
	seen := map[string]bool{}
	for i := range d.Schedules {
		s := &d.Schedules[i]
		where := fmt.Sprintf("schedule %q", s.Name)
		if err := ValidateName("schedule name", s.Name); err != nil {
			errs = append(errs, d.errf("", "schedule %d: %v", i+1, err))
			where = fmt.Sprintf("schedule %d", i+1)
		} else if seen[s.Name] {
			errs = append(errs, d.errf("", "schedule %q is defined twice", s.Name))
		}
		seen[s.Name] = true
		if s.Cron == "" {
			errs = append(errs, d.errf("", "%s: cron is missing (a 6-field pattern with seconds, a macro such as @daily, or @every 30s)", where))
		} else if _, err := s.Spec(); err != nil {
			errs = append(errs, d.errf("", "%s: %v", where, err))
		}
		switch s.Overlap {
		case "", OverlapSkip, OverlapAllow:
		default:
			errs = append(errs, d.errf("", "%s: overlap must be %s (the default: no new run while the last one runs) or %s, got %q", where, OverlapSkip, OverlapAllow, s.Overlap))
		}
		if strings.TrimSpace(s.Input) != "" {
			if _, err := DecodeJSON([]byte(s.Input)); err != nil {
				errs = append(errs, d.errf("", "%s: input is not JSON: %v", where, err))
			}
		}
	}
	return errs
}
