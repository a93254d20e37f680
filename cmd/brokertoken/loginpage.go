package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/oauthbroker"
)

// The login page: one row per browser-login user with its state and a button that
// starts the broker's login; the broker's redirect comes back under the same path.
//
//	GET  <path>                  the page (authenticated)
//	POST <path>/unlock           the shared secret's form (sets the cookie)
//	POST <path>/<user>/start     starts the user's broker login (authenticated): 303 to the broker
//	GET  <path>/<user>/redirect  the broker's redirect: checks the single-use state, exchanges, stores
//
// The redirect is not authenticated: the single-use state, which only the
// authenticated start can mint, is what proves the login began here, and a browser
// coming back from the broker may not carry the page's credentials. Every page is
// html/template output (everything escaped), shows no secret, and is neither cached
// nor framed.

// secretHeader carries the shared secret from a reverse proxy that authenticates humans.
const secretHeader = "X-Brokertoken-Login-Secret"

// secretCookie carries the page's proof that the shared secret was typed in.
const secretCookie = "brokertoken_login"

// handler serves the page and the brokers' redirects, at cfg.pagePath.
func (d *loginDesk) handler() http.Handler {
	p := d.cfg.pagePath
	mux := http.NewServeMux()
	root := p
	if root == "" {
		root = "/{$}"
	}
	mux.HandleFunc("GET "+root, d.authenticated(d.servePage))
	if p != "" {
		mux.HandleFunc("GET "+p+"/{$}", d.authenticated(d.servePage))
	}
	mux.HandleFunc("POST "+p+"/unlock", d.unlock)
	mux.HandleFunc("POST "+p+"/{user}/start", d.authenticated(d.start))
	mux.HandleFunc("GET "+p+"/{user}/redirect", func(w http.ResponseWriter, r *http.Request) {
		u := d.byName[r.PathValue("user")]
		if u == nil {
			d.render(w, http.StatusNotFound, messagePage{Title: "No such user", Message: "This daemon logs no such user in.", Back: d.pagePathOrRoot()})
			return
		}
		u.redirect(d.cache).ServeHTTP(w, r)
	})
	return d.knownHost(mux)
}

// knownHost serves next only to requests whose Host names the page (see
// loginConfig.hostAllowed); others get 421 Misdirected Request.
func (d *loginDesk) knownHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.cfg.hostAllowed(r.Host) {
			d.log.Warn("brokertoken: login page: refused a request for an unknown host name (set --login-url to the name humans use)",
				"host", clip(r.Host, 100), "remote", r.RemoteAddr)
			d.render(w, http.StatusMisdirectedRequest, messagePage{Title: "Unknown address",
				Message: "This page answers only at its own address. Open the address the daemon's operator gave you (see --login-url)."})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// startPath and redirectURL are where a user's login starts and where its broker sends
// the browser back (the URL to register with the broker).
func (d *loginDesk) startPath(user string) string {
	return d.cfg.pagePath + "/" + url.PathEscape(user) + "/start"
}

func (d *loginDesk) redirectURL(user string) string { return d.cfg.redirectURL(user) }

// pagePathOrRoot is the page's path for links back to it.
func (d *loginDesk) pagePathOrRoot() string {
	if d.cfg.pagePath == "" {
		return "/"
	}
	return d.cfg.pagePath
}

// authenticated wraps next with the page's authentication: HTTP basic auth and the
// shared secret, each when configured.
func (d *loginDesk) authenticated(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if d.cfg.basicUser != "" {
			user, pw, ok := r.BasicAuth()
			// Both fields are compared, in constant time, before either decides.
			if match := secretMatch(user, d.cfg.basicUser) & secretMatch(pw, d.cfg.basicPassword); !ok || match != 1 {
				if ok {
					d.log.Warn("brokertoken: login page: wrong basic auth credentials", "remote", r.RemoteAddr)
				}
				w.Header().Set("WWW-Authenticate", `Basic realm="brokertoken logins", charset="UTF-8"`)
				d.render(w, http.StatusUnauthorized, messagePage{Title: "Authentication required",
					Message: "This page starts broker logins: give the user name and password it is protected with."})
				return
			}
		}
		if d.cfg.secret != "" && !d.secretGiven(r) {
			d.renderUnlock(w, http.StatusForbidden, "This page starts broker logins: enter its access code.")
			return
		}
		next(w, r)
	}
}

// secretGiven reports whether r carries the shared secret (from a proxy) or the cookie
// the unlock form set.
func (d *loginDesk) secretGiven(r *http.Request) bool {
	if h := r.Header.Get(secretHeader); h != "" && equalSecret(h, d.cfg.secret) {
		return true
	}
	c, err := r.Cookie(secretCookie)
	return err == nil && d.cookieValid(c.Value, time.Now())
}

// cookieValue is the unlock cookie issued at issued: "v2.<unix seconds>.<HMAC>", the
// HMAC (keyed with the secret) of the issue time, so the cookie proves the secret was
// given without holding it, and lapses after unlockCookieAge whatever the browser
// keeps.
func (d *loginDesk) cookieValue(issued time.Time) string {
	at := strconv.FormatInt(issued.Unix(), 10)
	return "v2." + at + "." + d.cookieMAC(at)
}

func (d *loginDesk) cookieMAC(at string) string {
	m := hmac.New(sha256.New, []byte(d.cfg.secret))
	m.Write([]byte("brokertoken login page v2\n" + at))
	return hex.EncodeToString(m.Sum(nil))
}

// cookieValid reports whether v is an unlock cookie this secret issued, less than
// unlockCookieAge before now (a minute ahead is allowed for the clocks of other
// daemons).
func (d *loginDesk) cookieValid(v string, now time.Time) bool {
	version, rest, ok := strings.Cut(v, ".")
	at, mac, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || version != "v2" {
		return false
	}
	secs, err := strconv.ParseInt(at, 10, 64)
	if err != nil || secretMatch(mac, d.cookieMAC(at)) != 1 {
		return false
	}
	issued := time.Unix(secs, 0)
	return issued.Before(now.Add(time.Minute)) && now.Sub(issued) < unlockCookieAge
}

// secretMatch compares two secrets in constant time whatever their lengths (it compares
// their SHA-256 digests): 1 when equal, else 0, to be combined without short-circuit.
func secretMatch(a, b string) int {
	da, db := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(da[:], db[:])
}

// equalSecret reports whether two secrets are equal, in constant time.
func equalSecret(a, b string) bool { return secretMatch(a, b) == 1 }

// unlockCookieAge is how long the unlock cookie is good for (the browser keeps it as
// long, and the page refuses it after).
const unlockCookieAge = 30 * 24 * time.Hour

// pageSecure reports whether the page's public URL is https (its cookie is then sent
// over HTTPS only).
func (d *loginDesk) pageSecure() bool {
	u, err := url.Parse(d.cfg.pageURL)
	return err == nil && strings.EqualFold(u.Scheme, "https")
}

// unlock checks the shared secret typed into the page's form and sets the cookie.
func (d *loginDesk) unlock(w http.ResponseWriter, r *http.Request) {
	if d.cfg.secret == "" {
		http.Redirect(w, r, d.pagePathOrRoot(), http.StatusSeeOther)
		return
	}
	if !sameOrigin(r, d.cfg.pageURL) {
		d.render(w, http.StatusForbidden, messagePage{Title: "Refused", Message: "This form must be sent from the login page itself.", Back: d.pagePathOrRoot()})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil || !equalSecret(r.PostForm.Get("secret"), d.cfg.secret) {
		d.log.Warn("brokertoken: login page: wrong access code", "remote", r.RemoteAddr)
		d.renderUnlock(w, http.StatusForbidden, "Wrong access code. Try again.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: secretCookie, Value: d.cookieValue(time.Now()), Path: d.pagePathOrRoot(),
		MaxAge: int(unlockCookieAge / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: d.pageSecure()})
	http.Redirect(w, r, d.pagePathOrRoot(), http.StatusSeeOther)
}

// sameOrigin reports whether a form post comes from the page itself: the browser's
// Sec-Fetch-Site says so, or (a browser without it) its Origin is the request's host or
// the page's public host. Requests with neither (not a browser) pass: they carry the
// page's credentials themselves.
func sameOrigin(r *http.Request, pageURL string) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	ou, err := url.Parse(o)
	if err != nil || ou.Host == "" {
		return false
	}
	if strings.EqualFold(ou.Host, r.Host) {
		return true
	}
	pu, err := url.Parse(pageURL)
	return err == nil && strings.EqualFold(ou.Host, pu.Host)
}

// start sends the browser to the broker's login page with a new single-use state.
func (d *loginDesk) start(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("user")
	u := d.byName[name]
	if u == nil {
		d.render(w, http.StatusNotFound, messagePage{Title: "No such user", Message: "This daemon logs no such user in.", Back: d.pagePathOrRoot()})
		return
	}
	if !sameOrigin(r, d.cfg.pageURL) {
		d.log.Warn("brokertoken: login page: refused a login started from another site", "user", name, "remote", r.RemoteAddr)
		d.render(w, http.StatusForbidden, messagePage{Title: "Refused", Message: "A login must be started from the login page itself.", Back: d.pagePathOrRoot()})
		return
	}
	if o, ok := u.(*oauthUser); ok && o.bindsBrowser(d.cfg.pageURL) {
		// The state is bound to this browser by a cookie: a leaked provider URL cannot
		// be completed in another browser.
		d.log.Info("brokertoken: login started from the login page", "user", name, "broker", u.broker(), "remote", r.RemoteAddr, "bound", true)
		o.startBound(w, r)
		return
	}
	link, err := u.loginURL(r.Context())
	if err != nil {
		msg := d.scrub.scrub(oneLine(err.Error()))
		d.log.Error("brokertoken: cannot start a login", "user", name, "err", msg)
		d.render(w, http.StatusServiceUnavailable, messagePage{Title: "Cannot start the " + u.broker() + " login",
			Message: "The login state could not be stored in Redis. Try again in a moment.", Detail: msg, Back: d.pagePathOrRoot()})
		return
	}
	d.log.Info("brokertoken: login started from the login page", "user", name, "broker", u.broker(), "remote", r.RemoteAddr)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "same-origin")
	http.Redirect(w, r, link, http.StatusSeeOther)
}

// row is one user on the page.
type row struct {
	User     string
	Broker   string
	Who      string
	State    string // valid, missing, expired, rejected, revoked, failing or unknown (for machines: data-state)
	Class    string // ok, bad or wait (the colour)
	Text     string
	Detail   string
	Start    string
	Redirect string
	Grant    string // an OAuth2 user's grant: active, revoked or missing (data-grant); "" for Kite
}

// pageData is the page.
type pageData struct {
	Now      string
	Reminder string
	Rows     []row
}

// servePage renders the page from Redis (each user's token) and what the desk and the
// daemon know.
func (d *loginDesk) servePage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	now := time.Now()
	data := pageData{Now: now.In(ist).Format("15:04 MST, Mon 2 Jan"), Reminder: d.cfg.remind.String()}
	for _, u := range d.users {
		data.Rows = append(data.Rows, d.row(ctx, u, now))
	}
	d.render(w, http.StatusOK, data)
}

// row describes u's state.
func (d *loginDesk) row(ctx context.Context, u browserUser, now time.Time) row {
	name := u.name()
	rw := row{User: name, Broker: u.broker(), Who: u.who(ctx), Start: d.startPath(name), Redirect: d.redirectURL(name)}
	failing, kind, msg := d.failure(name)
	st, err := d.cache.Status(ctx, name)
	if err != nil {
		rw.State, rw.Class, rw.Text = "unknown", "wait", "The token cannot be read from Redis right now."
		rw.Detail = d.scrub.scrub(oneLine(err.Error()))
		return rw
	}
	d.mu.Lock()
	ls := *d.state[name]
	valid := d.validLocked(&ls, st)
	d.mu.Unlock()
	when := func(t time.Time) string { return t.In(ist).Format("15:04 MST on Mon 2 Jan") }
	switch {
	case valid:
		rw.State, rw.Class = "valid", "ok"
		rw.Text = fmt.Sprintf("Valid until %s (version %d, %s).", when(st.Token.Expiry), st.Token.Version, obtainedBy(st.ObtainedBy))
		if ls.unchecked != 0 && st.Token.Version == ls.unchecked {
			rw.Text += " A service reported it as refused by " + u.broker() + ", which could not be asked: if services fail, log in again."
		} else if ls.needed {
			rw.Text += " It cannot be renewed without a login: log in after it expires."
		}
	case ls.rejected != 0 && st.Token != nil && st.Token.Version == ls.rejected:
		rw.State, rw.Class = "rejected", "bad"
		rw.Text = fmt.Sprintf("%s rejected the token (version %d) at %s, before its expiry. Log in again.", u.broker(), ls.rejected, when(ls.rejectedAt))
	case failing:
		rw.State, rw.Class = "failing", "bad"
		rw.Text = fmt.Sprintf("No valid token: getting one fails (%s). Log in, or fix the cause below.", kind)
	case st.Token != nil:
		rw.State, rw.Class = "expired", "bad"
		rw.Text = fmt.Sprintf("The token expired at %s. Log in.", when(st.Token.Expiry))
	default:
		rw.State, rw.Class = "missing", "bad"
		rw.Text = "No token. Log in."
	}
	switch {
	case failing:
		rw.Detail = msg
	case ls.renewErr != "":
		rw.Detail = "Renewing with the refresh token failed: " + ls.renewErr
	}
	if !u.daily() {
		d.grantRow(ctx, u, &rw, valid, when)
		return rw
	}
	if !valid {
		if _, due := d.cfg.remind.due(d.now()); !due && !d.cfg.remind.off {
			rw.Text += " (Not needed before the reminder, " + d.cfg.remind.String() + ".)"
		}
	}
	return rw
}

// grantRow adds an OAuth2 user's grant to its row: when its refresh token expires, or
// that it was refused or never given; and the callback URL the app must have.
func (d *loginDesk) grantRow(ctx context.Context, u browserUser, rw *row, valid bool, when func(time.Time) string) {
	if o, ok := u.(*oauthUser); ok && o.entry.CallbackURL != "" {
		rw.Redirect = o.entry.CallbackURL
	}
	g, err := u.grant(ctx)
	if err != nil {
		rw.Detail = strings.TrimSpace(rw.Detail + " The grant cannot be read from Redis right now: " + d.scrub.scrub(oneLine(err.Error())))
		return
	}
	rw.Grant = string(g.State)
	switch g.State {
	case oauthbroker.StateMissing:
		if !valid {
			rw.State, rw.Class = "missing", "bad"
			rw.Text = "Not authorized yet: press the button and authorize the app at " + u.broker() + "."
		}
	case oauthbroker.StateRevoked:
		rw.State, rw.Class = "revoked", "bad"
		text := fmt.Sprintf("%s refused the refresh token at %s", u.broker(), when(g.RevokedAt))
		if g.Detail != "" {
			text += " (" + d.scrub.scrub(oneLine(g.Detail)) + ")"
		}
		text += ". Nothing refreshes the token until the app is authorized again."
		if valid && rw.Text != "" {
			text += " " + rw.Text
		}
		rw.Text = text
	case oauthbroker.StateLost:
		rw.State, rw.Class = "lost", "bad"
		text := "Redis lost the refresh token: nothing refreshes the token until the app is authorized again."
		if valid && rw.Text != "" {
			text += " " + rw.Text
		}
		rw.Text = text
	default:
		switch exp := g.RefreshExpiry; {
		case exp.IsZero():
		case !time.Now().Before(exp):
			rw.State, rw.Class = "expired", "bad"
			rw.Text += fmt.Sprintf(" The refresh token expired at %s: authorize the app again.", when(exp))
		default:
			rw.Text += fmt.Sprintf(" The refresh token expires at %s (in %s): authorize again before then.", when(exp), shortDuration(time.Until(exp)))
		}
	}
}

// obtainedBy says how a token was obtained, for the page.
func obtainedBy(by string) string {
	switch by {
	case "set":
		return "from a login"
	case "renew", "login":
		return "renewed with the refresh token"
	case "reseed":
		return "restored to Redis"
	}
	return "obtained"
}

// messagePage is a page that says one thing, with a link back.
type messagePage struct {
	Title   string
	Message string
	Detail  string
	Back    string
}

// unlockPage is the shared secret's form.
type unlockPage struct {
	Message string
	Action  string
}

// renderUnlock shows the shared secret's form.
func (d *loginDesk) renderUnlock(w http.ResponseWriter, status int, msg string) {
	action := d.cfg.pagePath + "/unlock"
	d.render(w, status, unlockPage{Message: msg, Action: action})
}

// render writes one of the page's templates with the headers every page gets.
func (d *loginDesk) render(w http.ResponseWriter, status int, data any) {
	name := "page"
	switch data.(type) {
	case messagePage:
		name = "message"
	case unlockPage:
		name = "unlock"
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// same-origin: the page's own forms send their Origin (no-referrer would make it
	// "null"); no other site is told the page's address.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	if err := pageTemplates.ExecuteTemplate(w, name, data); err != nil {
		d.log.Warn("brokertoken: writing the login page failed", "err", err)
	}
}

// pageTemplates are the page's HTML: server-rendered, no script, readable on a phone.
var pageTemplates = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em;max-width:40em;line-height:1.45}
h1{font-size:1.4em}h2{font-size:1.15em;margin:.2em 0;overflow-wrap:anywhere}
section{border:1px solid #ccc;border-radius:.5em;padding:.8em 1em;margin:1em 0}
.ok{color:#1a7f37}.bad{color:#b42318}.wait{color:#9a6700}
.state{font-weight:bold}
small,code{color:#555;overflow-wrap:anywhere}
button{font-size:1.1em;padding:.75em 1em;width:100%;border:0;border-radius:.4em;background:#387ed1;color:#fff}
input{font-size:1.1em;padding:.5em;width:100%;box-sizing:border-box;margin:.5em 0}
</style></head><body>
{{end}}

{{define "page"}}{{template "head" "brokertoken: broker logins"}}
<h1>Broker logins</h1>
<p>{{.Now}}. {{with .Reminder}}Reminder: {{.}}.{{end}}</p>
{{range .Rows}}
<section data-user="{{.User}}" data-state="{{.State}}"{{with .Grant}} data-grant="{{.}}"{{end}}>
<h2>{{.User}} <small>{{.Broker}}{{with .Who}}, {{.}}{{end}}</small></h2>
<p class="state {{.Class}}">{{.Text}}</p>
{{with .Detail}}<p><small>{{.}}</small></p>{{end}}
<form method="post" action="{{.Start}}"><button type="submit">Log in with {{.Broker}}</button></form>
<p><small>{{if .Grant}}Callback URL of the app at{{else}}Redirect URL to register with{{end}} {{.Broker}}: <code>{{.Redirect}}</code></small></p>
</section>
{{else}}
<p>No user of the credentials file logs in through a browser (Kite, Schwab, OAuth2 apps).</p>
{{end}}
</body></html>
{{end}}

{{define "message"}}{{template "head" .Title}}
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{with .Detail}}<p>Details: <code>{{.}}</code></p>{{end}}
{{with .Back}}<p><a href="{{.}}">Back to the logins</a></p>{{end}}
</body></html>
{{end}}

{{define "unlock"}}{{template "head" "brokertoken: broker logins"}}
<h1>Broker logins</h1>
<p>{{.Message}}</p>
<form method="post" action="{{.Action}}">
<label for="secret">Access code</label>
<input id="secret" type="password" name="secret" autocomplete="current-password" required>
<button type="submit">Open</button>
</form>
</body></html>
{{end}}
`))
