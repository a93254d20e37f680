package tradovate

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/brokertoken/brokertoken/internal/backoff"
)

// Endpoint names used in errors and logs.
const (
	endpointLogin = "auth/accesstokenrequest"
	endpointTV    = "authorize"
	endpointRenew = "auth/renewaccesstoken"
	endpointMe    = "auth/me"
	// The account lists: the official one and the TradingView-style one.
	endpointAccountList = "account/list"
	endpointTVAccounts  = "accounts"
)

// maxResponse bounds what is read of an answer; real ones are under 2 KiB.
const maxResponse = 1 << 20

// request is one HTTP request to the broker.
type request struct {
	method      string
	url         string
	contentType string // "" for no body
	body        []byte
	bearer      string // "" for no Authorization header
}

// answer is what a successful exchange yields: a token, or a penalty to wait out.
type answer struct {
	access, md string
	expiry     time.Time  // explicit expiry from the answer; zero when absent
	user       userFields // what the answer says about the user, if anything
	accounts   []Account  // an account list's entries
	penalty    *penalty
}

// call describes one logical call for exchange.
type call struct {
	endpoint string
	user     string
	login    bool // spends the login budget and respects cool-downs
	// build makes the request, adding ticket (non-empty after a penalty).
	build func(ticket string) request
	// interpret reads an answer; a nil *APIError means ans holds a token or a penalty.
	interpret func(status int, body []byte) (*answer, *APIError)
	// secrets are scrubbed from broker text put into errors.
	secrets []string
}

// exchange runs c: it sends requests, waits out time penalties and resends with the
// p-ticket (at most Options.MaxPenaltyRetries times), and retries temporary failures
// with capped, jittered backoff (at most Options.MaxAttempts requests). Every request
// of a login first checks the cool-downs and takes a slot of the login budget.
func (a *Authenticator) exchange(ctx context.Context, c call) (*answer, error) {
	var ticket string
	attempts, penalties, failures := 0, 0, 0
	for {
		if c.login {
			if err := a.cooldown.check(ctx, c.user); err != nil {
				return nil, err
			}
			if err := a.budget.take(ctx, c.user); err != nil {
				return nil, err
			}
		}
		attempts++
		ans, apiErr := a.roundTrip(ctx, c, ticket)
		if apiErr == nil && ans.penalty != nil {
			p := ans.penalty
			switch {
			case p.captcha:
				apiErr = &APIError{StatusCode: http.StatusOK, Err: ErrCaptchaRequired}
			case penalties >= a.opts.MaxPenaltyRetries:
				apiErr = &APIError{StatusCode: http.StatusOK,
					Err: fmt.Errorf("%w after %d resends with a p-ticket", ErrPenaltyLimit, penalties)}
			default:
				penalties++
				ticket = p.ticket
				if err := a.waitPenalty(ctx, c, p); err != nil {
					return nil, a.fail(c, attempts, err)
				}
				continue
			}
		}
		if apiErr == nil {
			return ans, nil
		}
		apiErr.Endpoint, apiErr.User, apiErr.Attempts = c.endpoint, c.user, attempts
		apiErr.Text = scrub(apiErr.Text, c.secrets...)
		failures++
		if !apiErr.temporary || failures >= a.opts.MaxAttempts {
			return nil, apiErr
		}
		d := a.backoff(failures)
		a.opts.Logger.Warn("tradovate: retrying after a temporary failure",
			"endpoint", c.endpoint, "user", c.user, "attempt", attempts, "wait", d, "err", apiErr.Error())
		if err := sleep(ctx, d); err != nil {
			return nil, apiErr // the last failure says more than the context's end
		}
	}
}

// roundTrip sends one request of c and interprets the answer.
func (a *Authenticator) roundTrip(ctx context.Context, c call, ticket string) (*answer, *APIError) {
	r := c.build(ticket)
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
	if err != nil {
		return nil, &APIError{Err: fmt.Errorf("%w: %w", ErrUnexpectedStatus, err)}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "brokertoken")
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	resp, err := a.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		e := transportError(ctx, err)
		e.StatusCode = resp.StatusCode
		if c.login && resp.StatusCode == http.StatusOK && e.temporary {
			// The broker answered 200 and the answer was cut: the login may well have
			// been accepted, and resending it would open another session.
			e.Err = fmt.Errorf("%w: HTTP 200 but the answer was cut short (%w); the login may have been accepted, so it is not resent",
				ErrUnavailable, err)
			e.temporary = false
		}
		return nil, e
	}
	ans, apiErr := c.interpret(resp.StatusCode, raw)
	if apiErr != nil && apiErr.StatusCode == 0 {
		apiErr.StatusCode = resp.StatusCode
	}
	return ans, apiErr
}

// transportError classifies a failure to get an answer: the caller's context ending is
// final, anything else (timeouts, refused connections, resets) is temporary.
func transportError(ctx context.Context, err error) *APIError {
	if ctx.Err() != nil {
		return &APIError{Err: ctx.Err()}
	}
	return &APIError{Err: fmt.Errorf("%w: %w", ErrUnavailable, err), temporary: true}
}

// statusError classifies a non-200 answer. text is the broker's errorText, if any. For
// a call made with a token (login false), 401 and 400 mean the token is rejected: the
// renewal documentation says calls made with an expired token "return 400 or 401".
func statusError(status int, login bool, text string) *APIError {
	e := &APIError{StatusCode: status, Text: text}
	switch {
	case status == http.StatusUnauthorized && login:
		e.Err = ErrBadCredentials
	case (status == http.StatusUnauthorized || status == http.StatusBadRequest) && !login:
		e.Err = errTokenRejected
	case status == http.StatusTooManyRequests || status == http.StatusLocked:
		e.Err = ErrLockedOut
	case status == http.StatusRequestTimeout || status >= 500:
		e.Err, e.temporary = ErrUnavailable, true
	default:
		e.Err = ErrUnexpectedStatus
	}
	return e
}

// malformed is the temporary error for a 200 answer that cannot be used.
func malformed(why string) *APIError {
	return &APIError{StatusCode: http.StatusOK, Err: fmt.Errorf("%w: %s", ErrMalformedResponse, why), temporary: true}
}

// unknownAnswer is the final error for a login the broker accepted but whose answer
// cannot be read; body is described by structure only (see describeShape).
func unknownAnswer(body []byte) *APIError {
	return &APIError{StatusCode: http.StatusOK, Err: fmt.Errorf("%w: %s", ErrUnknownLoginAnswer, describeShape(body))}
}

// waitPenalty waits out a time penalty, bounded by ctx. A wait that would outlast the
// context's deadline fails at once instead of sleeping to a certain failure.
func (a *Authenticator) waitPenalty(ctx context.Context, c call, p *penalty) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < p.wait {
		return &APIError{StatusCode: http.StatusOK,
			Err: fmt.Errorf("%w: the %s penalty outlasts the context deadline", ErrPenaltyLimit, p.wait)}
	}
	a.opts.Logger.Warn("tradovate: time penalty, waiting before resending with the p-ticket",
		"endpoint", c.endpoint, "user", c.user, "wait", p.wait)
	if err := sleep(ctx, p.wait); err != nil {
		return &APIError{StatusCode: http.StatusOK, Err: fmt.Errorf("waiting out a %s time penalty: %w", p.wait, err)}
	}
	return nil
}

// fail completes an *APIError produced outside roundTrip.
func (a *Authenticator) fail(c call, attempts int, err error) error {
	if e, ok := err.(*APIError); ok {
		e.Endpoint, e.User, e.Attempts = c.endpoint, c.user, attempts
	}
	return err
}

// backoff returns the jittered wait before retry n (1-based): RetryBackoff doubled n-1
// times, capped at MaxRetryBackoff, then a random value between half of it and all of it.
func (a *Authenticator) backoff(n int) time.Duration {
	return backoff.Jittered(n, a.opts.RetryBackoff, a.opts.MaxRetryBackoff)
}

// sleep waits d or until ctx ends, returning ctx.Err() in that case.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
