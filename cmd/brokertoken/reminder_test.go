package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReminderIsDueFromItsTimeOnItsDays(t *testing.T) {
	tests := []struct {
		name string
		r    reminder
		at   time.Time
		day  string
		due  bool
	}{
		{"Monday before", defaultReminder, istTime(30, 8, 44), "", false},
		{"Monday at the time", defaultReminder, istTime(30, 8, 45), "2026-11-30", true},
		{"Monday evening", defaultReminder, istTime(30, 23, 59), "2026-11-30", true},
		{"Tuesday just after midnight", defaultReminder, istTime(31, 0, 1), "", false},
		{"Saturday", defaultReminder, istTime(28, 10, 0), "", false},
		{"Sunday", defaultReminder, istTime(29, 10, 0), "", false},
		{"in UTC: 03:15Z is 08:45 IST", defaultReminder, time.Date(2026, 11, 30, 3, 15, 0, 0, time.UTC), "2026-11-30", true},
		{"the IST date, not the UTC one", defaultReminder, time.Date(2026, 11, 30, 20, 0, 0, 0, time.UTC), "", false}, // 01:30 IST Tuesday
		{"off", reminder{off: true, days: defaultReminder.days}, istTime(30, 12, 0), "", false},
		{"Saturdays too", reminder{at: 9 * time.Hour, days: [7]bool{time.Saturday: true}}, istTime(28, 9, 0), "2026-11-28", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			day, due := tt.r.due(tt.at)
			assert.Equal(t, tt.due, due)
			assert.Equal(t, tt.day, day)
		})
	}
	assert.Equal(t, "08:45 IST, Mon-Fri", defaultReminder.String())
	assert.Equal(t, "off", reminder{off: true}.String())
}

func TestReminderOptions(t *testing.T) {
	for in, want := range map[string]time.Duration{"08:45": 8*time.Hour + 45*time.Minute, "00:00": 0, "23:59": 23*time.Hour + 59*time.Minute, "off": -1} {
		got, err := parseTimeOfDay(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for in, want := range map[string]time.Duration{"8:45": 8*time.Hour + 45*time.Minute, " 07:05 ": 7*time.Hour + 5*time.Minute} {
		got, err := parseTimeOfDay(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"8:5", "24:00", "08:60", "0845", "8h45", "", "+8:45", "08:+5", "-0:30", "008:45", "08:4 5", "٠٨:٤٥", ":45", "08:"} {
		_, err := parseTimeOfDay(bad)
		assert.Error(t, err, bad)
	}
	for in, want := range map[string]string{"mon-fri": "Mon-Fri", "all": "every day", "mon,wed,sat": "Mon, Wed, Sat",
		"fri-mon": "Mon, Fri, Sat, Sun", "MON-SAT": "Mon-Sat", "sun": "Sun"} {
		days, err := parseWeekdays(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, describeDays(days), in)
	}
	for _, bad := range []string{"monday", "mon-", "", "mon,,fri", "xyz"} {
		_, err := parseWeekdays(bad)
		assert.Error(t, err, bad)
	}
}

func TestLoginOptions(t *testing.T) {
	c, _, err := load(t, "run", map[string]string{"BROKERTOKEN_LISTEN": "127.0.0.1:9464"})
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:9464/login", c.login.pageURL, "the page shares --listen by default")
	assert.Equal(t, "/login", c.login.pagePath)
	assert.Equal(t, "", c.login.listen)
	assert.Equal(t, defaultReminder, c.login.remind)

	c, _, err = load(t, "run", map[string]string{"BROKERTOKEN_LOGIN_SECRET": "0123456789abcdef", "BROKERTOKEN_KITE_REMINDER": "09:00",
		"KITE_API_URL": "http://127.0.0.1:1"},
		"--login-listen", "127.0.0.1:9465", "--login-url", "https://ops.example.com/brokertoken/kite/", "--login-basic-auth", "ops:pw:with:colons",
		"--kite-reminder-days", "mon-sat", "--kite-login-url", "http://127.0.0.1:2/connect/login")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9465", c.login.listen)
	assert.Equal(t, "https://ops.example.com/brokertoken/kite", c.login.pageURL)
	assert.Equal(t, "/brokertoken/kite", c.login.pagePath)
	assert.Equal(t, "ops", c.login.basicUser)
	assert.Equal(t, "pw:with:colons", c.login.basicPassword)
	assert.Equal(t, "0123456789abcdef", c.login.secret)
	assert.Equal(t, "09:00 IST, Mon-Sat", c.login.remind.String())
	assert.Equal(t, "http://127.0.0.1:1", c.login.kiteAPIURL)
	assert.Equal(t, "http://127.0.0.1:2/connect/login", c.login.kiteLoginURL)

	c, _, err = load(t, "run", nil, "--login-listen", ":9465", "--login-url", "https://kite.example.com")
	require.NoError(t, err)
	assert.Equal(t, "", c.login.pagePath, "a listener of its own may serve the page at /")
	c, _, err = load(t, "run", nil, "--login-listen", ":9465", "--login-url", "https://kite.example.com/metrics")
	require.NoError(t, err)
	assert.Equal(t, "/metrics", c.login.pagePath, "a listener of its own may serve the page at any path")

	c, _, err = load(t, "token", map[string]string{"KITE_API_URL": "http://127.0.0.1:1"})
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:1", c.login.kiteAPIURL)
	assert.Empty(t, c.login.pageURL)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--login-secret", "short"}, "--login-secret: want 16 characters or more"},
		{[]string{"--login-basic-auth", "nopassword"}, "--login-basic-auth: want USER:PASSWORD"},
		{[]string{"--login-url", "https://ops.example.com/a?b=c"}, `--login-url "https://ops.example.com/a?b=c": want a URL without a query or fragment`},
		{[]string{"--login-url", "https://u:SECRET@ops.example.com/a"}, "--login-url: want a URL without user information"},
		{[]string{"--login-url", "https://ops.example.com"}, "give the page a path"},
		{[]string{"--login-url", "https://ops.example.com/healthz/"}, `--login-url "https://ops.example.com/healthz/": /healthz is the daemon's own path on --listen`},
		{[]string{"--login-url", "http://127.0.0.1:9464/metrics"}, "/metrics is the daemon's own path on --listen; give the page another (e.g. /login), or serve it on --login-listen"},
		{[]string{"--login-url", "https://ops.example.com/a%20b"}, "want a path of letters"},
		{[]string{"--login-listen", "nonsense"}, `--login-listen "nonsense": want host:port`},
		{[]string{"--kite-reminder", "8am"}, `--kite-reminder "8am": want a time such as 08:45`},
		{[]string{"--kite-reminder-days", "weekdays"}, `--kite-reminder-days "weekdays": want days such as mon-fri`},
		{[]string{"--kite-api-url", "ftp://x"}, `--kite-api-url "ftp://x": want an http:// or https:// URL`},
		// A URL with a password that does not parse: the password is never echoed.
		{[]string{"--login-url", "https://admin:hunter2pw@ops.example.com:badport/login"}, "--login-url: not a valid URL; it seems to hold a user name or password, not shown"},
		{[]string{"--login-url", "https://admin:hunter2pw@ops example.com/login"}, "--login-url: not a valid URL"},
		{[]string{"--login-url", "https://ops.example.com/hunter2pw@x?y=1"}, "--login-url: want a URL without a query"},
		{[]string{"--login-url", "ftp://admin:hunter2pw@ops.example.com/login"}, "--login-url: want a URL without user information"},
		{[]string{"--kite-api-url", "http://admin:hunter2pw@127.0.0.1:badport"}, "--kite-api-url: not a valid URL"},
		{[]string{"--kite-login-url", "ftp://admin:hunter2pw@kite.example"}, "--kite-login-url: want an http:// or https:// URL"},
	} {
		_, _, err := load(t, "run", nil, tt.args...)
		require.Error(t, err, tt.args)
		assert.Equal(t, exitUsage, exitCode(err))
		assert.Contains(t, err.Error(), tt.want)
		assert.NotContains(t, err.Error(), "SECRET")
		assert.NotContains(t, err.Error(), "nopassword")
		assert.NotContains(t, err.Error(), "hunter2pw")
	}
}

// The login page's basic auth password and shared secret are scrubbed from whatever a
// command writes, like the Redis password.
func TestScrubberKnowsTheLoginPageSecrets(t *testing.T) {
	env := map[string]string{"BROKERTOKEN_LOGIN_BASIC_AUTH": "ops:pw-basic-S3cr3t", "REDIS_PASSWORD": "redis-pw-S3cr3t"}
	cfg, _, err := load(t, "run", env, "--login-secret", "shared-secret-0123456789")
	require.NoError(t, err)
	s := newScrubber(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	out := s.scrub("basic pw-basic-S3cr3t, secret shared-secret-0123456789, redis redis-pw-S3cr3t")
	assert.Equal(t, "basic [REDACTED], secret [REDACTED], redis [REDACTED]", out)
}
