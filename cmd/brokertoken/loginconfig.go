package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The options of the login page, the Kite reminder and Kite's addresses.
var (
	optLoginListen      = option{name: "login-listen", env: "BROKERTOKEN_LOGIN_LISTEN", kind: "ADDR", usage: "address that serves the login page alone, e.g. for a reverse proxy (default: the page is served on --listen, beside /healthz and /metrics)"}
	optLoginURL         = option{name: "login-url", env: "BROKERTOKEN_LOGIN_URL", kind: "URL", usage: "public URL of the login page, as humans open it and alerts show it; the page is served at this URL's path, so a reverse proxy forwards it unchanged (default http://<--login-listen or --listen>/login)"}
	optLoginBasicAuth   = option{name: "login-basic-auth", env: "BROKERTOKEN_LOGIN_BASIC_AUTH", secret: true, kind: "USER:PASSWORD", usage: "require HTTP basic authentication for the login page (default: none)"}
	optLoginSecret      = option{name: "login-secret", env: "BROKERTOKEN_LOGIN_SECRET", secret: true, kind: "SECRET", usage: "require a shared secret (16 characters or more) for the login page: typed once into the page's form (then kept in a cookie) or sent by a reverse proxy in the X-Brokertoken-Login-Secret header (default: none)"}
	optKiteReminder     = option{name: "kite-reminder", env: "BROKERTOKEN_KITE_REMINDER", def: "08:45", kind: "HH:MM|off", usage: "time of day in India (IST) from which a Kite user without a valid token gets one alert with the login page's URL, and counts as unhealthy"}
	optKiteReminderDays = option{name: "kite-reminder-days", env: "BROKERTOKEN_KITE_REMINDER_DAYS", def: "mon-fri", kind: "DAYS", usage: "days (in India) the reminder applies, e.g. mon-fri or mon,wed,sat"}
	optKiteAPIURL       = option{name: "kite-api-url", env: "KITE_API_URL", kind: "URL", usage: "Kite Connect API root override (default https://api.kite.trade)"}
	optKiteLoginURL     = option{name: "kite-login-url", env: "KITE_LOGIN_URL", kind: "URL", usage: "Kite login page override (default https://kite.zerodha.com/connect/login)"}
	optSchwabURL        = option{name: "schwab-url", env: "SCHWAB_URL", kind: "URL", usage: "root of Schwab's authorization and token endpoints, for a proxy or a fake (default https://api.schwabapi.com)"}
	optOAuthAlerts      = option{name: "oauth-expiry-alerts", env: "BROKERTOKEN_OAUTH_EXPIRY_ALERTS", def: "24h,2h", kind: "DURATIONS|off", usage: "how long before an OAuth2 user's refresh token expires (Schwab: 7 days after the authorization) one alert each is sent with the login page's URL, e.g. 24h,2h"}
)

// loginConfig is the resolved configuration of the login page and the reminder.
type loginConfig struct {
	listen   string // --login-listen; "" serves the page on --listen
	served   string // the address that serves the page (--login-listen, else --listen); "" for none
	pageURL  string // the page's public URL; "" when no listener serves it
	pagePath string // the path the page is served at, without a trailing slash

	basicUser, basicPassword string // --login-basic-auth; "" for none
	secret                   string // --login-secret; "" for none

	remind reminder // when to remind, in IST

	kiteAPIURL, kiteLoginURL string // "" for Kite's own
	schwabURL                string // "" for Schwab's own

	oauthLeads []time.Duration // --oauth-expiry-alerts, ascending; empty: none
}

// redirectURL is where the page answers a broker's redirect for user (the URL to
// register with the broker); "" when no page is served.
func (l *loginConfig) redirectURL(user string) string {
	if l.pageURL == "" {
		return ""
	}
	return l.pageURL + "/" + url.PathEscape(user) + "/redirect"
}

// pagePathPattern is the paths the page may be served at: plain segments, so the path
// is also a ServeMux pattern.
var pagePathPattern = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)*$`)

// minLoginSecret is the shortest shared secret accepted.
const minLoginSecret = 16

// loadLogin resolves the login options into c.login. It needs c.listen resolved.
func (f *flags) loadLogin(c *config) error {
	has := func(o option) bool { _, ok := f.opts[o.name]; return ok }
	l := &c.login
	for _, u := range []struct {
		o   option
		dst *string
	}{{optKiteAPIURL, &l.kiteAPIURL}, {optKiteLoginURL, &l.kiteLoginURL}, {optSchwabURL, &l.schwabURL}} {
		if !has(u.o) {
			continue
		}
		v, src := f.lookup(u.o)
		if v == "" {
			continue
		}
		if err := checkHTTPURL(v); err != nil {
			return usagef("%s: %v", where(urlOption(u.o, v), v, src), err)
		}
		*u.dst = v
	}
	if has(optOAuthAlerts) {
		v, src := f.lookup(optOAuthAlerts)
		leads, err := parseLeads(v)
		if err != nil {
			return usagef("%s: %v", where(optOAuthAlerts, v, src), err)
		}
		l.oauthLeads = leads
	}
	if !has(optLoginURL) {
		return nil // a command without the page
	}

	v, src := f.lookup(optLoginListen)
	if v != "" {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			return usagef("%s: want host:port, e.g. 127.0.0.1:9465 or :9465", where(optLoginListen, v, src))
		}
	}
	l.listen = v
	serving := l.listen
	if serving == "" {
		serving = c.listen
	}
	l.served = serving

	v, src = f.lookup(optLoginURL)
	switch {
	case v != "":
		shown := urlOption(optLoginURL, v)
		u, err := url.Parse(v)
		switch {
		case err != nil && shown.secret:
			return usagef("%s: not a valid URL; it seems to hold a user name or password, not shown (see --login-basic-auth)", where(shown, v, src))
		case err == nil && u.User != nil:
			return usagef("%s: want a URL without user information (see --login-basic-auth)", where(shown, v, src))
		}
		if err := checkHTTPURL(v); err != nil {
			return usagef("%s: %v", where(shown, v, src), err)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return usagef("%s: want a URL without a query or fragment", where(shown, v, src))
		}
		l.pagePath = strings.TrimRight(u.EscapedPath(), "/")
		if !pagePathPattern.MatchString(l.pagePath) {
			return usagef("%s: want a path of letters, digits and . _ ~ - between slashes", where(shown, v, src))
		}
		if l.pagePath == "" && l.listen == "" {
			return usagef("%s: give the page a path (e.g. /login) when it shares --listen with /healthz and /metrics", where(shown, v, src))
		}
		if (l.pagePath == "/healthz" || l.pagePath == "/metrics") && l.listen == "" {
			return usagef("%s: %s is the daemon's own path on --listen; give the page another (e.g. /login), or serve it on --login-listen", where(shown, v, src), l.pagePath)
		}
		l.pageURL = strings.TrimRight(v, "/")
	case serving != "":
		l.pagePath = "/login"
		l.pageURL = "http://" + publicHostPort(serving) + l.pagePath
	}

	if v, src := f.lookup(optLoginBasicAuth); v != "" {
		user, pw, ok := strings.Cut(v, ":")
		if !ok || user == "" || pw == "" {
			return usagef("%s: want USER:PASSWORD", where(optLoginBasicAuth, v, src))
		}
		l.basicUser, l.basicPassword = user, pw
	}
	if v, src := f.lookup(optLoginSecret); v != "" {
		if len(v) < minLoginSecret {
			return usagef("%s: want %d characters or more", where(optLoginSecret, v, src), minLoginSecret)
		}
		l.secret = v
	}

	v, src = f.lookup(optKiteReminder)
	at, err := parseTimeOfDay(v)
	if err != nil {
		return usagef("%s: %v", where(optKiteReminder, v, src), err)
	}
	dv, dsrc := f.lookup(optKiteReminderDays)
	days, err := parseWeekdays(dv)
	if err != nil {
		return usagef("%s: %v", where(optKiteReminderDays, dv, dsrc), err)
	}
	l.remind = reminder{at: at, days: days, off: at < 0}
	return nil
}

// parseLeads parses --oauth-expiry-alerts: a comma list of positive durations
// ("24h,2h"), or "off" for none. The result is ascending, without repeats.
func parseLeads(s string) ([]time.Duration, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "off" || s == "none" {
		return []time.Duration{}, nil
	}
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("want positive durations such as 24h,2h, or off")
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// urlOption is o as errors name it for the URL v: without the value when v may hold a
// user name and password (an '@' anywhere), so that no error echoes a password.
func urlOption(o option, v string) option {
	if strings.Contains(v, "@") {
		o.secret = true
	}
	return o
}

// publicHostPort is addr as a browser on another machine would reach it: a listen
// address without a host (":9464", "0.0.0.0:9464") names this machine.
func publicHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		} else {
			host = "localhost"
		}
	}
	return net.JoinHostPort(host, port)
}

// parseTimeOfDay parses "HH:MM" (24-hour clock) as an offset from midnight, or "off"
// as -1.
func parseTimeOfDay(s string) (time.Duration, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "off" || s == "none" {
		return -1, nil
	}
	hh, mm, ok := strings.Cut(s, ":")
	h, herr := strconv.Atoi(hh)
	m, merr := strconv.Atoi(mm)
	digits := func(v string) bool { return v != "" && strings.Trim(v, "0123456789") == "" }
	if !ok || !digits(hh) || len(hh) > 2 || !digits(mm) || herr != nil || merr != nil || len(mm) != 2 || h > 23 || m > 59 {
		return 0, fmt.Errorf("want a time such as 08:45 (IST, 24-hour clock) or off")
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

// weekdayNames are the days as the options spell them.
var weekdayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// parseWeekdays parses a comma list of days and ranges ("mon-fri", "mon,wed,sat",
// "fri-mon"), or "all".
func parseWeekdays(s string) ([7]bool, error) {
	var days [7]bool
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "all" || s == "daily" {
		for i := range days {
			days[i] = true
		}
		return days, nil
	}
	bad := fmt.Errorf("want days such as mon-fri or mon,wed,sat (sun mon tue wed thu fri sat), or all")
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		from, to, isRange := strings.Cut(part, "-")
		a, ok := weekdayNames[strings.TrimSpace(from)]
		if !ok {
			return days, bad
		}
		b := a
		if isRange {
			if b, ok = weekdayNames[strings.TrimSpace(to)]; !ok {
				return days, bad
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			days[d] = true
			if d == b {
				break
			}
		}
	}
	return days, nil
}

// hostAllowed reports whether host, a request's Host header, names the page: the host
// of its public URL, an IP address, or a name of the address it listens on
// ("localhost" for a loopback or wildcard address, this machine's name for a wildcard
// one). Any other name is refused: a browser sent there by a name the page does not
// know (DNS rebinding: an attacker's name made to point at this address) would treat
// the page as the attacker's own site. An IP address cannot be rebound. The port is
// not compared: a reverse proxy may forward another.
func (l *loginConfig) hostAllowed(host string) bool {
	name := strings.ToLower(strings.TrimSuffix(hostOnly(host), "."))
	if name == "" {
		return false
	}
	if net.ParseIP(name) != nil {
		return true
	}
	if u, err := url.Parse(l.pageURL); err == nil && strings.EqualFold(strings.TrimSuffix(u.Hostname(), "."), name) {
		return true
	}
	listenHost := strings.ToLower(hostOnly(l.served))
	if listenHost == name {
		return true
	}
	ip := net.ParseIP(listenHost)
	wildcard := listenHost == "" || ip != nil && ip.IsUnspecified()
	if name == "localhost" && (wildcard || listenHost == "localhost" || ip != nil && ip.IsLoopback()) {
		return true
	}
	if wildcard {
		if h, err := os.Hostname(); err == nil && strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// hostOnly is the host of a host[:port] (an IPv6 address without its brackets).
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}
