package zerodha

import "time"

// ist is India Standard Time, UTC+05:30 all year: India has no daylight saving time. A
// fixed zone needs no time zone database, unlike time.LoadLocation("Asia/Kolkata"),
// which fails on machines without tzdata.
var ist = time.FixedZone("IST", 5*60*60+30*60)

// day is the length of a day in India, which never changes (no daylight saving time).
const day = 24 * time.Hour

// ExpiryAfter returns the first instant strictly after t at which the wall clock in
// India (IST, UTC+05:30) reads timeOfDay, an offset from midnight taken modulo 24 hours.
// ExpiryAfter(t, 6*time.Hour) is the next 06:00 IST: when Kite expires the access
// tokens issued before it. The result is in IST.
func ExpiryAfter(t time.Time, timeOfDay time.Duration) time.Time {
	timeOfDay %= day
	if timeOfDay < 0 {
		timeOfDay += day
	}
	local := t.In(ist)
	y, m, d := local.Date()
	at := time.Date(y, m, d, 0, 0, 0, 0, ist).Add(timeOfDay)
	if !at.After(t) {
		at = at.Add(day)
	}
	return at
}
