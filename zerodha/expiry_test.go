package zerodha_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/brokertoken/brokertoken/zerodha"
)

func TestExpiryAfterIsTheNextMorningInIndia(t *testing.T) {
	ist := time.FixedZone("IST", 19800)
	at := func(y int, m time.Month, d, hh, mm, ss int) time.Time { return time.Date(y, m, d, hh, mm, ss, 0, ist) }
	for _, tc := range []struct {
		name      string
		t         time.Time
		timeOfDay time.Duration
		want      time.Time
	}{
		{"evening login", at(2025, 1, 6, 21, 0, 0), 6 * time.Hour, at(2025, 1, 7, 6, 0, 0)},
		{"morning login after the flush", at(2025, 1, 6, 8, 30, 0), 6 * time.Hour, at(2025, 1, 7, 6, 0, 0)},
		{"login before the flush", at(2025, 1, 6, 5, 0, 0), 6 * time.Hour, at(2025, 1, 6, 6, 0, 0)},
		{"exactly at the flush", at(2025, 1, 6, 6, 0, 0), 6 * time.Hour, at(2025, 1, 7, 6, 0, 0)},
		{"month and year end", at(2025, 12, 31, 23, 0, 0), 6 * time.Hour, at(2026, 1, 1, 6, 0, 0)},
		{"leap day", at(2024, 2, 28, 12, 0, 0), 6 * time.Hour, at(2024, 2, 29, 6, 0, 0)},
		{"07:30 configured", at(2025, 1, 6, 7, 0, 0), 7*time.Hour + 30*time.Minute, at(2025, 1, 6, 7, 30, 0)},
		{"given in UTC", time.Date(2025, 1, 6, 23, 0, 0, 0, time.UTC), 6 * time.Hour, at(2025, 1, 7, 6, 0, 0)},
		{"UTC evening before IST midnight", time.Date(2025, 1, 6, 18, 0, 0, 0, time.UTC), 6 * time.Hour, at(2025, 1, 7, 6, 0, 0)},
		{"time of day wraps", at(2025, 1, 6, 21, 0, 0), 30 * time.Hour, at(2025, 1, 7, 6, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := zerodha.ExpiryAfter(tc.t, tc.timeOfDay)
			assert.True(t, got.Equal(tc.want), "got %s, want %s", got, tc.want)
			assert.Equal(t, "IST", got.Location().String())
		})
	}
}

// The fixed zone agrees with the time zone database wherever one is installed.
func TestExpiryAfterAgreesWithAsiaKolkata(t *testing.T) {
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Skipf("no time zone database here (%v): the fixed zone is why the package does not need one", err)
	}
	start := time.Date(2024, 1, 1, 0, 17, 0, 0, time.UTC)
	for i := 0; i < 3*365*4; i++ { // every 6 hours for three years
		now := start.Add(time.Duration(i) * 6 * time.Hour)
		got := zerodha.ExpiryAfter(now, 6*time.Hour)
		local := got.In(kolkata)
		if local.Hour() != 6 || local.Minute() != 0 || !got.After(now) || got.Sub(now) > 24*time.Hour {
			t.Fatalf("ExpiryAfter(%s) = %s (%s in Asia/Kolkata)", now, got, local)
		}
	}
}
