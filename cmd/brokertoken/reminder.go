package main

import (
	"fmt"
	"strings"
	"time"
)

// ist is India Standard Time, UTC+05:30 all year (no daylight saving time), fixed so
// that no time zone database is needed. Kite's day runs on it.
var ist = time.FixedZone("IST", 5*60*60+30*60)

// reminder says from when, each day, a Kite user should have a valid token: a time of
// day in India on some days of the week (by default 08:45 IST, Monday to Friday, before
// the exchanges open at 09:15). From then on a user without one gets one alert a day
// and counts as unhealthy; before it, or on other days, a missing token is normal
// (Kite expires every token at 06:00 IST).
type reminder struct {
	at   time.Duration // offset from midnight IST
	days [7]bool       // by time.Weekday
	off  bool          // no reminder: a missing token is never unhealthy
}

// defaultReminder is the reminder when no option says otherwise.
var defaultReminder = reminder{at: 8*time.Hour + 45*time.Minute,
	days: [7]bool{time.Monday: true, time.Tuesday: true, time.Wednesday: true, time.Thursday: true, time.Friday: true}}

// due reports whether now is on a reminder day, at or after the reminder time, and
// names that day ("2006-01-02" in IST).
func (r reminder) due(now time.Time) (day string, ok bool) {
	if r.off {
		return "", false
	}
	local := now.In(ist)
	y, m, d := local.Date()
	midnight := time.Date(y, m, d, 0, 0, 0, 0, ist)
	if !r.days[local.Weekday()] || local.Before(midnight.Add(r.at)) {
		return "", false
	}
	return local.Format(time.DateOnly), true
}

// String describes the reminder for humans: "08:45 IST, Mon-Fri".
func (r reminder) String() string {
	if r.off {
		return "off"
	}
	at := fmt.Sprintf("%02d:%02d IST", int(r.at/time.Hour), int(r.at%time.Hour/time.Minute))
	return at + ", " + describeDays(r.days)
}

// describeDays names a set of weekdays: "Mon-Fri", "Mon, Wed, Sat", "every day".
func describeDays(days [7]bool) string {
	order := []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}
	var on []string
	n := 0
	for _, d := range order {
		if days[d] {
			on = append(on, d.String()[:3])
			n++
		}
	}
	switch {
	case n == 7:
		return "every day"
	case n == 0:
		return "no day"
	}
	// A run of consecutive days from Monday reads as a range.
	run := 0
	for run < len(order) && days[order[run]] {
		run++
	}
	if run == n && n > 2 {
		return on[0] + "-" + on[n-1]
	}
	return strings.Join(on, ", ")
}
