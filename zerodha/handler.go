package zerodha

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Store is where [App.RedirectHandler] puts the token of a completed login.
// [*tokencache.Cache] implements it: Set stores the token as the user's newest version
// and announces it to every process sharing the Redis.
type Store interface {
	Set(ctx context.Context, user string, t *tokencache.Token) (*tokencache.Token, error)
}

var _ Store = (*tokencache.Cache)(nil)

// completeTimeout bounds the exchange and the store after Kite's redirect.
const completeTimeout = 30 * time.Second

// LoginHandler returns an http.Handler that sends the browser (HTTP 302) to a newly
// minted Kite login URL ([App.LoginURL]). Mount it where [Options.StartURL] points, so
// the URL shown to humans never expires. It answers GET only.
//
// Anyone who can reach it can start a login, and anyone with a Kite login for the app
// can complete one: serve it behind your operators' authentication, and set
// [Options.UserID] so that only the expected Kite user's login is stored.
func (a *App) LoginHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			a.render(w, page{Status: http.StatusMethodNotAllowed, Title: "Method not allowed",
				Message: "Open this address in a browser."})
			return
		}
		link, err := a.LoginURL(r.Context())
		if err != nil {
			a.opts.Logger.Error("zerodha: cannot start a Kite login", "err", err)
			a.render(w, page{Status: http.StatusServiceUnavailable, Title: "Cannot start the Kite login",
				Message: "The login state could not be stored in Redis. Try again in a moment.", Detail: err.Error()})
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, link, http.StatusFound)
	})
}

// RedirectHandler returns the http.Handler for Kite's redirect: mount it at the
// redirect URL registered for the app in Kite's developer console. It answers GET only,
// and for each request:
//
//  1. consumes the state from redirect_params (unknown, expired or used: HTTP 400);
//  2. requires status=success and a request_token (else HTTP 400);
//  3. exchanges the request_token once ([App.Exchange]; Kite's refusals: HTTP 502,
//     with Kite's message and what to do);
//  4. refuses a Kite user other than [Options.UserID], logging that session out
//     (HTTP 403);
//  5. stores the refresh token, when Kite gave one, where only the writer role reads
//     it, and what Kite said about the user ([App.UserInfo]);
//  6. stores the access token with store.Set under [App.User], expiring at
//     [App.Expiry] (HTTP 500 if that fails), and answers HTTP 200.
//
// Every answer is an HTML page for the human in the browser, saying what happened and,
// on failure, offering a new login link. No page, log line or error shows a token, the
// checksum or the secret. The exchange and the store run detached from the request's
// context (bounded by 30 seconds): a request token works once, so a browser that gives
// up half-way must not lose the login.
func (a *App) RedirectHandler(store Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			a.render(w, page{Status: http.StatusMethodNotAllowed, Title: "Method not allowed",
				Message: "Kite's redirect is a GET request."})
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), completeTimeout)
		defer cancel()
		a.render(w, a.complete(ctx, store, r))
	})
}

// complete runs the steps of RedirectHandler and returns the page to show.
func (a *App) complete(ctx context.Context, store Store, r *http.Request) page {
	q := r.URL.Query()
	log := a.opts.Logger
	ok, err := a.consumeState(ctx, q.Get("state"))
	if err != nil {
		log.Error("zerodha: cannot check a login state", "err", err)
		return a.retryPage(ctx, page{Status: http.StatusServiceUnavailable, Title: "Cannot check this login",
			Message: "The login state could not be read from Redis, so this login was not completed.", Detail: err.Error()})
	}
	if !ok {
		log.Warn("zerodha: login redirect with an unknown, expired or used state", "remote", r.RemoteAddr)
		return a.retryPage(ctx, page{Status: http.StatusBadRequest, Title: "This login link has expired or was already used",
			Message: fmt.Sprintf("Each login link works once, for %s. Nothing was changed: start a new login.", a.opts.StateTTL)})
	}
	if status := q.Get("status"); status != "success" {
		log.Warn("zerodha: Kite did not complete the login", "status", clean(status, 40))
		return a.retryPage(ctx, page{Status: http.StatusBadRequest, Title: "Kite did not complete the login",
			Message: fmt.Sprintf("Kite sent the browser back with status %q instead of \"success\". Nothing was changed.", clean(status, 40))})
	}
	requestToken := q.Get("request_token")
	if requestToken == "" {
		log.Warn("zerodha: Kite's redirect carried no request_token")
		return a.retryPage(ctx, page{Status: http.StatusBadRequest, Title: "Kite sent no request token",
			Message: "The redirect from Kite carried no request_token. Nothing was changed."})
	}

	sess, err := a.Exchange(ctx, requestToken)
	if err != nil {
		log.Error("zerodha: request token exchange failed", "err", err)
		return a.exchangeFailedPage(ctx, err)
	}
	if a.opts.UserID != "" && sess.UserID != a.opts.UserID {
		lerr := a.Logout(ctx, sess.AccessToken)
		log.Error("zerodha: login by an unexpected Kite user refused", "user_id", sess.UserID,
			"want", a.opts.UserID, "logout_err", lerr)
		return a.retryPage(ctx, page{Status: http.StatusForbidden, Title: "Wrong Kite user",
			Message: fmt.Sprintf("You logged in to Kite as %s, but this app serves %s. That session was logged out and nothing was stored. Log in as %s.",
				sess.UserID, a.opts.UserID, a.opts.UserID)})
	}

	if sess.RefreshToken != "" {
		// Before the access token is announced: a process that renews as soon as it
		// sees the new token must find the refresh token that came with it.
		if err := a.storeRefreshToken(ctx, sess.RefreshToken); err != nil {
			log.Error("zerodha: could not store the refresh token; tomorrow's token will need a human login", "err", err)
		}
	}
	a.saveInfo(ctx, sess)
	now := time.Now()
	stored, err := store.Set(ctx, a.opts.User, &tokencache.Token{
		AccessToken: sess.AccessToken,
		ObtainedAt:  now,
		Expiry:      a.Expiry(now),
	})
	if err != nil {
		log.Error("zerodha: logged in to Kite but could not store the token", "user", a.opts.User, "err", err)
		return a.retryPage(ctx, page{Status: http.StatusInternalServerError,
			Title:   "Logged in to Kite, but the token could not be stored",
			Message: "Services keep waiting for a token. Log in again once the problem below is fixed.", Detail: err.Error()})
	}
	log.Info("zerodha: Kite login stored", "user", a.opts.User, "user_id", sess.UserID, "version", stored.Version,
		"expires", stored.Expiry.In(ist).Format(time.RFC3339), "token", tokencache.Redact(stored.AccessToken))
	who := sess.UserID
	if sess.UserName != "" {
		who += " (" + sess.UserName + ")"
	}
	return page{Status: http.StatusOK, OK: true, Title: "Logged in to Kite",
		Message: fmt.Sprintf("Logged in as %s. Every service now uses this login (token version %d) until %s. You can close this page.",
			who, stored.Version, stored.Expiry.In(ist).Format("15:04 MST on Mon 2 Jan"))}
}

// exchangeFailedPage explains a failed exchange: Kite's own words, and what to do.
func (a *App) exchangeFailedPage(ctx context.Context, err error) page {
	p := page{Status: http.StatusBadGateway, Title: "Kite refused the login", Detail: err.Error()}
	var ae *APIError
	switch {
	case errors.Is(err, ErrNoSecret):
		return page{Status: http.StatusInternalServerError, Title: "This server cannot complete Kite logins",
			Message: "The Kite app's API secret is not configured in the process serving this page (Options.APISecret)."}
	case errors.Is(err, ErrUnavailable):
		p.Title = "Kite could not be reached"
		p.Message = "The login could not be completed because Kite did not answer properly. Try again in a moment."
	case errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "checksum"):
		p.Message = "Kite says the checksum is wrong: the API secret configured here does not match the Kite app's " +
			"(was it regenerated in the developer console?). Fix the configuration, then log in again."
		return p // a new login would fail the same way: no link
	case errors.Is(err, ErrTokenException):
		p.Message = "Kite no longer accepts this request token: it was already used, or more than a few minutes " +
			"passed since the login. Log in again."
	default:
		p.Message = "The login could not be completed. Log in again; if this repeats, check the app's configuration."
	}
	return a.retryPage(ctx, p)
}

// retryPage adds a new login link to p.
func (a *App) retryPage(ctx context.Context, p page) page {
	if link, err := a.loginLink(ctx); err == nil {
		p.Again = link
	}
	return p
}

// page is what the handlers show the human.
type page struct {
	Status  int
	OK      bool
	Title   string
	Message string
	Detail  string // the error, as text
	Again   string // a login link
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.4}
h1{color:{{if .OK}}#1a7f37{{else}}#b42318{{end}}}code{white-space:pre-wrap}</style></head>
<body><h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{- with .Detail}}
<p>Details: <code>{{.}}</code></p>
{{- end}}
{{- with .Again}}
<p><a href="{{.}}">Log in to Kite again</a></p>
{{- end}}
</body></html>
`))

// render writes p as an HTML page that no cache keeps and no Referer leaks from.
func (a *App) render(w http.ResponseWriter, p page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(p.Status)
	if err := pageTemplate.Execute(w, p); err != nil {
		a.opts.Logger.Warn("zerodha: writing a page failed", "err", err)
	}
}
