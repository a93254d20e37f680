package oauthbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// completeTimeout bounds the exchange and the stores after the provider's redirect.
const completeTimeout = 30 * time.Second

// LoginHandler returns an http.Handler that sends the browser (HTTP 302) to a newly
// minted authorization URL. Mount it where [Options.StartURL] points, so the URL shown
// to humans never expires. It answers GET only.
//
// The state is bound to the browser: the handler sets a random, HttpOnly,
// SameSite=Lax cookie (Secure when the redirect URL is https, path the redirect URL's)
// and [Broker.RedirectHandler] completes the authorization only for the browser that
// presents it, so a login URL that leaks (a log, a shared screen) cannot be completed
// elsewhere to slip another account's grant in. Serve both handlers on the host of
// [Options.RedirectURL].
//
// Anyone who can reach it can start an authorization, and anyone who can log in to the
// provider can complete one: serve it behind your operators' authentication.
func (b *Broker) LoginHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			render(w, b.opts.Logger, page{Status: http.StatusMethodNotAllowed, Title: "Method not allowed",
				Message: "Open this address in a browser."})
			return
		}
		nonce := make([]byte, 32)
		_, _ = rand.Read(nonce)
		cookie := hex.EncodeToString(nonce)
		link, err := b.mintURL(r.Context(), bindingOf(cookie))
		if err != nil {
			b.opts.Logger.Error("oauthbroker: cannot start an authorization", "user", b.opts.User, "err", err)
			render(w, b.opts.Logger, page{Status: http.StatusServiceUnavailable, Title: "Cannot start the authorization",
				Message: "The login state could not be stored in Redis. Try again in a moment.", Detail: err.Error()})
			return
		}
		state := ""
		if u, err := url.Parse(link); err == nil {
			state = u.Query().Get("state")
		}
		http.SetCookie(w, &http.Cookie{Name: cookieName(state), Value: cookie, Path: b.cookiePath(),
			MaxAge: int(b.opts.StateTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode,
			Secure: strings.HasPrefix(b.opts.RedirectURL, "https:")})
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, link, http.StatusFound)
	})
}

// RedirectHandler returns the http.Handler for the provider's redirect to
// [Options.RedirectURL]; see [RedirectHandler].
func (b *Broker) RedirectHandler(store Store) http.Handler { return RedirectHandler(store, b) }

// RedirectHandler returns the http.Handler for the provider's redirect, serving every
// broker given (users of one app share its callback URL): the state names the user.
// The brokers must share one Redis and Prefix. It answers GET only, and for each
// request:
//
//  1. consumes the state (unknown, expired or used: HTTP 400);
//  2. shows the provider's refusal (error=access_denied, ...: HTTP 400);
//  3. exchanges the code once (the provider's refusals: HTTP 502);
//  4. stores the refresh token as a new grant where only the writer role reads it, and
//     the access token with store.Set (HTTP 500 if that fails), and answers HTTP 200.
//
// Every answer is an HTML page for the human, saying what happened and, on failure,
// offering a new link. No page, log line or error shows a token, a code or the
// secret. The exchange and the stores run detached from the request's context
// (bounded by 30 seconds): a code works once, so a browser that gives up half-way must
// not lose the authorization.
func RedirectHandler(store Store, brokers ...*Broker) http.Handler {
	byUser := map[string]*Broker{}
	for _, b := range brokers {
		if b.opts.Prefix != brokers[0].opts.Prefix || b.opts.Redis != brokers[0].opts.Redis {
			panic("oauthbroker: RedirectHandler: the brokers must share one Redis client and Prefix")
		}
		byUser[b.opts.User] = b
	}
	if len(brokers) == 0 {
		panic("oauthbroker: RedirectHandler needs a broker")
	}
	first := brokers[0]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			render(w, first.opts.Logger, page{Status: http.StatusMethodNotAllowed, Title: "Method not allowed",
				Message: "The provider's redirect is a GET request."})
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), completeTimeout)
		defer cancel()
		q := r.URL.Query()
		state, binding := q.Get("state"), ""
		if c, err := r.Cookie(cookieName(state)); err == nil && validHex(c.Value, 64) {
			binding = bindingOf(c.Value)
		}
		ls, mismatch, err := consumeState(ctx, first.opts.Redis, first.opts.Prefix, state, binding, true)
		if err != nil {
			first.opts.Logger.Error("oauthbroker: cannot check a login state", "err", err)
			render(w, first.opts.Logger, page{Status: http.StatusServiceUnavailable, Title: "Cannot check this authorization",
				Message: "The login state could not be read from Redis, so nothing was stored. Try again in a moment.", Detail: err.Error()})
			return
		}
		if mismatch {
			first.opts.Logger.Warn("oauthbroker: redirect from a browser that did not start the authorization", "remote", r.RemoteAddr)
			render(w, first.opts.Logger, page{Status: http.StatusBadRequest, Title: "This authorization was started in another browser",
				Message: "For safety, an authorization completes only in the browser that started it. Nothing was changed: start again here."})
			return
		}
		var b *Broker
		if ls != nil {
			b = byUser[ls.User]
		}
		if b != nil {
			http.SetCookie(w, &http.Cookie{Name: cookieName(state), Value: "", Path: b.cookiePath(), MaxAge: -1, HttpOnly: true,
				SameSite: http.SameSiteLaxMode, Secure: strings.HasPrefix(b.opts.RedirectURL, "https:")})
		}
		if b == nil {
			first.opts.Logger.Warn("oauthbroker: redirect with an unknown, expired or used state", "remote", r.RemoteAddr)
			render(w, first.opts.Logger, page{Status: http.StatusBadRequest, Title: "This authorization link has expired or was already used",
				Message: fmt.Sprintf("Each link works once, for %s. Nothing was changed: start again.", first.opts.StateTTL)})
			return
		}
		render(w, b.opts.Logger, b.completePage(ctx, store, ls, q))
	})
}

// completePage completes an authorization whose state was consumed and says how it went.
func (b *Broker) completePage(ctx context.Context, store Store, ls *loginState, q map[string][]string) page {
	get := values(q)
	log := b.opts.Logger
	if e := get("error"); e != "" {
		ae := &AuthorizeError{Code: clean(e, 60), Description: clean(get("error_description"), 200)}
		log.Warn("oauthbroker: the provider did not authorize the app", "user", b.opts.User, "err", ae)
		return b.retryPage(ctx, page{Status: http.StatusBadRequest, Title: "The app was not authorized",
			Message: "The provider sent the browser back without authorizing the app. Nothing was changed.", Detail: ae.Error()})
	}
	tok, err := b.complete(ctx, store, ls, get("code"))
	var te *TokenError
	switch {
	case err == nil:
		return page{Status: http.StatusOK, OK: true, Title: "Authorized",
			Message: fmt.Sprintf("%s is authorized for %s. Every service now uses this grant (token version %d). You can close this page.",
				b.opts.User, b.opts.Provider.Name, tok.Version)}
	case errors.As(err, &te):
		log.Error("oauthbroker: code exchange failed", "user", b.opts.User, "err", err)
		msg := "The provider refused the code. Start again; if this repeats, check the app's key, secret and callback URL."
		if te.Temporary() {
			msg = "The provider could not be reached or failed. Start again in a moment."
		}
		return b.retryPage(ctx, page{Status: http.StatusBadGateway, Title: "The provider refused the authorization",
			Message: msg, Detail: err.Error()})
	default:
		log.Error("oauthbroker: authorization not stored", "user", b.opts.User, "err", err)
		return b.retryPage(ctx, page{Status: http.StatusInternalServerError, Title: "The authorization could not be stored",
			Message: "Services keep using what they had. Start again once the problem below is fixed.", Detail: err.Error()})
	}
}

// retryPage adds a new authorization link to p.
func (b *Broker) retryPage(ctx context.Context, p page) page {
	p.Again = b.retryLink(ctx)
	return p
}

// cookieName names the cookie that binds state to its browser (one per login, so
// that two logins in one browser do not clash).
func cookieName(state string) string {
	if len(state) > 16 {
		state = state[:16]
	}
	return "oauthbroker-" + state
}

// bindingOf is what a state stores of its browser's cookie.
func bindingOf(cookie string) string {
	sum := sha256.Sum256([]byte(cookie))
	return hex.EncodeToString(sum[:])
}

// cookiePath is the redirect URL's path, where the binding cookie must be sent.
func (b *Broker) cookiePath() string {
	if u, err := url.Parse(b.opts.RedirectURL); err == nil && u.Path != "" {
		return u.Path
	}
	return "/"
}

// retryLink is the link a failure page offers: StartURL (binding a new state to this
// browser), else an unbound authorization URL.
func (b *Broker) retryLink(ctx context.Context) string {
	link, _ := b.loginLink(ctx)
	return link
}

// page is what the handlers show the human.
type page struct {
	Status  int
	OK      bool
	Title   string
	Message string
	Detail  string // the error, as text
	Again   string // a new authorization link
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.4}
h1{color:{{if .OK}}#1a7f37{{else}}#b42318{{end}}}code{white-space:pre-wrap}</style></head>
<body><h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{- with .Detail}}
<p>Details: <code>{{.}}</code></p>
{{- end}}
{{- with .Again}}
<p><a href="{{.}}">Authorize again</a></p>
{{- end}}
</body></html>
`))

// render writes p as an HTML page that no cache keeps and no Referer leaks from.
func render(w http.ResponseWriter, log interface{ Warn(string, ...any) }, p page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(p.Status)
	if err := pageTemplate.Execute(w, p); err != nil {
		log.Warn("oauthbroker: writing a page failed", "err", err)
	}
}
