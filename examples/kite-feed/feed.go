package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

// Feed keeps one market-data stream connected with the newest Kite token, with no
// restart: this is the part of the example to copy into a service.
//
//   - It calls Cache.Watch before Cache.Token, so no login is missed, and reconnects once
//     per new token that Watch delivers (a human logged in again).
//   - When Kite refuses the token (a 403 TokenException: the morning expiry, or a newer
//     login killed it), it reports the token to Cache.Invalidate and waits for the next
//     login instead of retrying: the cache answers *zerodha.LoginRequiredError, whose
//     URL it logs, until a human logs in.
//   - A stream that ends by itself is dialled again after a short, growing backoff,
//     cut short by a new token.
type Feed struct {
	// Cache supplies the tokens; its Authenticator should be the app's
	// zerodha.Authenticator. Required.
	Cache *tokencache.Cache
	// User is the cache user holding the app's token (zerodha.App.User). Required.
	User string
	// Dial opens the stream with tok, for as long as ctx lives. It returns an error
	// matching zerodha.ErrTokenException when Kite refuses the token. Required.
	Dial func(ctx context.Context, tok *tokencache.Token) (io.ReadCloser, error)
	// OnTick receives each line of the stream. Default: none.
	OnTick func(line string)
	// OnEvent receives the feed's events, for tests and metrics. It runs on the feed's
	// goroutine and must return quickly. Default: none.
	OnEvent func(Event)
	// Recheck is how often a feed waiting for a login asks the cache again, in case a
	// Watch notification was missed (default 1 minute, the cache's default RetryMax).
	Recheck time.Duration
	// RetryMin and RetryMax bound the backoff between dials after a stream ended or a
	// dial failed (defaults 100 ms and 5 s).
	RetryMin, RetryMax time.Duration
	// Logger receives the feed's events; tokens appear only redacted. Default: discard.
	Logger *slog.Logger
}

// EventKind names what happened to a Feed.
type EventKind string

// The events of a Feed.
const (
	EventWaiting    EventKind = "waiting"     // no usable token: waiting for a human login
	EventConnected  EventKind = "connected"   // the stream is up with Event.Version
	EventRejected   EventKind = "rejected"    // Kite refused Event.Version (403 TokenException)
	EventNewLogin   EventKind = "new-login"   // a newer token arrived: reconnecting
	EventDropped    EventKind = "dropped"     // the stream ended by itself
	EventDialFailed EventKind = "dial-failed" // the stream could not be opened (not a token problem)
)

// Event is one thing that happened to a Feed.
type Event struct {
	Kind    EventKind
	Version int64  // the token version concerned, 0 if none
	Token   string // that token, redacted (tokencache.Redact)
	Err     error  // the reason, for waiting, rejected and dial-failed
}

// Run keeps the stream connected until ctx is done or the cache is closed, and returns
// why it stopped.
func (f *Feed) Run(ctx context.Context) error {
	f.defaults()
	changes := f.Cache.Watch(ctx, f.User) // before Token: no login is missed
	failures := 0
	for {
		tok, err := f.Cache.Token(ctx, f.User)
		if err != nil {
			if stop := stopReason(ctx, err); stop != nil {
				return stop
			}
			f.waiting(err)
			if err := f.wait(ctx, changes, f.Recheck); err != nil {
				return err
			}
			continue
		}

		connCtx, hangUp := context.WithCancel(ctx)
		stream, err := f.Dial(connCtx, tok)
		switch {
		case errors.Is(err, zerodha.ErrTokenException):
			hangUp()
			// Kite no longer accepts this token. Report it: no process serves it again,
			// and a login is asked for only if Redis still holds it. The next Token call
			// then returns a newer token, or the login-required error to wait on.
			f.emit(Event{Kind: EventRejected, Version: tok.Version, Token: tokencache.Redact(tok.AccessToken), Err: err})
			f.Logger.Warn("feed: Kite rejected the token", "version", tok.Version, "token", tokencache.Redact(tok.AccessToken), "err", err)
			if err := f.Cache.Invalidate(ctx, f.User, tok.AccessToken); err != nil {
				if stop := stopReason(ctx, err); stop != nil {
					return stop
				}
				if err := f.wait(ctx, changes, f.Recheck); err != nil {
					return err
				}
			}
			continue
		case err != nil:
			hangUp()
			if stop := stopReason(ctx, err); stop != nil {
				return stop
			}
			failures++
			f.emit(Event{Kind: EventDialFailed, Version: tok.Version, Token: tokencache.Redact(tok.AccessToken), Err: err})
			f.Logger.Warn("feed: cannot connect", "err", err, "failures", failures)
			if err := f.wait(ctx, changes, f.backoff(failures)); err != nil {
				return err
			}
			continue
		}

		f.emit(Event{Kind: EventConnected, Version: tok.Version, Token: tokencache.Redact(tok.AccessToken)})
		f.Logger.Info("feed: connected", "version", tok.Version, "token", tokencache.Redact(tok.AccessToken))
		started := time.Now()
		newer, err := f.consume(ctx, stream, hangUp, tok, changes)
		if err != nil {
			return err
		}
		if newer != nil {
			failures = 0
			f.emit(Event{Kind: EventNewLogin, Version: newer.Version, Token: tokencache.Redact(newer.AccessToken)})
			f.Logger.Info("feed: new login; reconnecting", "version", newer.Version)
			continue
		}
		if time.Since(started) > f.RetryMax {
			failures = 0 // it streamed for a good while: start the backoff over
		}
		failures++
		f.emit(Event{Kind: EventDropped, Version: tok.Version, Token: tokencache.Redact(tok.AccessToken)})
		f.Logger.Info("feed: stream ended; reconnecting", "version", tok.Version)
		if err := f.wait(ctx, changes, f.backoff(failures)); err != nil {
			return err
		}
	}
}

func (f *Feed) defaults() {
	if f.Recheck <= 0 {
		f.Recheck = time.Minute
	}
	if f.RetryMin <= 0 {
		f.RetryMin = 100 * time.Millisecond
	}
	if f.RetryMax <= 0 {
		f.RetryMax = 5 * time.Second
	}
	f.RetryMax = max(f.RetryMax, f.RetryMin)
	if f.Logger == nil {
		f.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// consume reads the stream until it ends (nil, nil), a token newer than tok arrives
// (that token, nil), or the feed must stop (nil, why).
func (f *Feed) consume(ctx context.Context, stream io.ReadCloser, hangUp context.CancelFunc,
	tok *tokencache.Token, changes <-chan *tokencache.Token) (*tokencache.Token, error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stream)
		for sc.Scan() {
			if f.OnTick != nil {
				f.OnTick(sc.Text())
			}
		}
	}()
	closeStream := func() {
		hangUp()
		<-done
		stream.Close()
	}
	for {
		select {
		case <-done:
			closeStream()
			return nil, nil
		case t, ok := <-changes:
			if !ok {
				closeStream()
				return nil, stopReason(ctx, tokencache.ErrClosed)
			}
			if t.Version <= tok.Version {
				continue // the token this stream already uses
			}
			closeStream()
			return t, nil
		case <-ctx.Done():
			closeStream()
			return nil, ctx.Err()
		}
	}
}

// wait returns after d, or as soon as a new token arrives, or with the reason to stop.
func (f *Feed) wait(ctx context.Context, changes <-chan *tokencache.Token, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case _, ok := <-changes:
		if !ok {
			return stopReason(ctx, tokencache.ErrClosed)
		}
		return nil
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waiting reports that no usable token exists, with the login URL when there is one.
func (f *Feed) waiting(err error) {
	f.emit(Event{Kind: EventWaiting, Err: err})
	var login *zerodha.LoginRequiredError
	if errors.As(err, &login) {
		f.Logger.Warn("feed: waiting for a human to log in to Kite", "url", login.URL)
		return
	}
	f.Logger.Warn("feed: no usable token; waiting", "err", err)
}

func (f *Feed) emit(e Event) {
	if f.OnEvent != nil {
		f.OnEvent(e)
	}
}

// backoff is the wait after the n-th consecutive failure: exponential, capped.
func (f *Feed) backoff(n int) time.Duration {
	d := f.RetryMin
	for i := 1; i < n && d < f.RetryMax; i++ {
		d *= 2
	}
	return min(d, f.RetryMax)
}

// stopReason returns the error that ends Run: ctx's, or the cache's closing; nil for
// anything worth waiting out.
func stopReason(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, tokencache.ErrClosed) {
		return err
	}
	return nil
}

// HTTPDialer returns a Feed.Dial for a streaming HTTP feed that, like Kite's websocket
// (wss://ws.kite.trade?api_key=...&access_token=...), takes the credentials in its query
// and refuses a bad token with HTTP 403 and a TokenException. Its errors never contain
// the URL: the query holds the token.
func HTTPDialer(client *http.Client, feedURL, apiKey string) func(context.Context, *tokencache.Token) (io.ReadCloser, error) {
	return func(ctx context.Context, tok *tokencache.Token) (io.ReadCloser, error) {
		q := url.Values{"api_key": {apiKey}, "access_token": {tok.AccessToken}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, feedURL+"?"+q.Encode(), nil)
		if err != nil {
			return nil, errors.New("feed: bad feed URL")
		}
		resp, err := client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // without the URL and its token
			}
			return nil, fmt.Errorf("feed: connect: %w", err)
		}
		if err := zerodha.CheckResponse(resp); err != nil {
			return nil, err
		}
		return resp.Body, nil
	}
}
