package tokencache_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// secrets collects every password and token a scenario handles, and every text it
// produced, then checks that no text contains a secret.
type secrets struct {
	mu     sync.Mutex
	values map[string]bool
	texts  []string
}

func (s *secrets) secret(v string) {
	if v == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[v] = true
	// A JWT's signature is its secret part: it must not appear on its own either.
	if parts := strings.Split(v, "."); len(parts) == 3 && len(parts[2]) > 12 {
		s.values[parts[2]] = true
	}
}

func (s *secrets) token(t *tokencache.Token) {
	if t != nil {
		s.secret(t.AccessToken)
		s.secret(t.MDAccessToken)
	}
}

// text records what a scenario printed: every fmt verb of v.
func (s *secrets) text(v ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range v {
		s.texts = append(s.texts, fmt.Sprintf("%v|%+v|%#v|%s|%q", x, x, x, x, x))
	}
}

func randomHex(t *testing.T) string {
	var b [8]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return hex.EncodeToString(b[:])
}

// Item 7 (the core and the Tradovate client; cmd/brokertoken's tests scan the daemon's
// and the CLI's outputs): logins, renewals, a reported bad token, bad credentials, a
// captcha, a broker outage, Watch, Status, at debug level; no password and no token
// appears in any log line, hook argument, error string or formatted value.
func TestReliabilityNoSecretsInLogsErrorsOrFormattedValues(t *testing.T) {
	srv := testutil.Redis(t)
	fake := tradovatefake.New(t, tradovatefake.Options{Lifetime: 4 * time.Second})
	s := &secrets{values: map[string]bool{}}
	good, badpw, captcha, down := srv.Name("good"), srv.Name("badpw"), srv.Name("captcha"), srv.Name("down")
	var creds []tradovate.Credential
	for _, u := range []string{good, badpw, captcha, down} {
		pw := "pw-" + randomHex(t)
		fake.AddUser(u, pw)
		s.secret(pw)
		if u == badpw {
			pw = "wrong-" + randomHex(t)
			s.secret(pw)
		}
		sec := "sec-" + randomHex(t)
		s.secret(sec)
		creds = append(creds, tradovate.Credential{Username: u, Password: pw, Sec: sec, CID: "7"})
	}
	cs, err := tradovate.NewCredentials(creds...)
	require.NoError(t, err)
	for _, c := range creds {
		s.text(c)
	}

	var logs testutil.Buffer
	auth, err := tradovate.New(tradovate.Options{
		RESTURL: fake.RESTURL(), TradingViewURL: fake.TradingViewURL(), Credentials: cs,
		Redis: srv.Client(t), Namespace: srv.Prefix + ":tradovate", RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 40 * time.Millisecond,
		Cooldown: time.Minute, Logger: debugLogger(&logs),
	})
	require.NoError(t, err)
	// Not scanned here: fmt of *tradovate.Credentials, tradovate.Options and (with %s,
	// %q or an API secret in Options) *tradovate.Authenticator, which show passwords and
	// API secrets (reported; see RELIABILITY.md).
	hooks := tokencache.Hooks{
		Refreshed:     func(user, op string, tok *tokencache.Token) { s.token(tok); s.text(user, op, tok) },
		RefreshFailed: func(user, op string, err error) { s.text(user, op, err) },
		LeaseWait:     func(user string, waited time.Duration) { s.text(user, waited) },
		Invalidated:   func(user string, version int64) { s.text(user, version) },
	}
	c := newCache(t, srv.Client(t), srv.Prefix, auth, shortLived, func(o *tokencache.Options) {
		o.Logger, o.Hooks, o.LegacyKeys = debugLogger(&logs), hooks, true
	})
	reader := newCache(t, srv.Client(t), srv.Prefix, nil, func(o *tokencache.Options) { o.Logger = debugLogger(&logs) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := reader.Watch(ctx, good)

	call := func(cache *tokencache.Cache, user string) *tokencache.Token {
		tok, err := cache.Token(ctx, user)
		s.token(tok)
		s.text(tok, err)
		if err != nil {
			s.text(err.Error())
		}
		return tok
	}
	// Login, reads by another process, renewals in the stale window.
	first := call(c, good)
	require.NotNil(t, first)
	call(reader, good)
	require.Eventually(t, func() bool { call(c, good); return fake.Renewals(good) >= 1 }, 10*time.Second, 20*time.Millisecond)
	// A reported bad token: a new login.
	cur := call(c, good)
	require.NoError(t, c.Invalidate(ctx, good, cur.AccessToken))
	require.NoError(t, reader.Invalidate(ctx, good, cur.AccessToken))
	require.Eventually(t, func() bool { tok := call(c, good); return tok != nil && tok.AccessToken != cur.AccessToken }, 10*time.Second, 20*time.Millisecond)
	// Failures: bad credentials, a captcha, an outage (5xx, garbage).
	assert.Nil(t, call(c, badpw))
	fake.Script(tradovatefake.AccessTokenRequest, captcha, tradovatefake.Captcha())
	assert.Nil(t, call(c, captcha))
	fake.Script(tradovatefake.AccessTokenRequest, down, tradovatefake.Status(503), tradovatefake.Garbage(), tradovatefake.Status(500))
	assert.Nil(t, call(c, down))
	// Set, Status, Watch, Redact.
	set, err := c.Set(ctx, srv.Name("set"), &tokencache.Token{AccessToken: "set-" + randomHex(t) + randomHex(t), Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	s.token(set)
	s.text(set)
	for _, u := range []string{good, badpw, captcha, down} {
		st, err := c.Status(ctx, u)
		s.token(st.Token)
		s.text(st, err)
	}
	for done := false; !done; {
		select {
		case tok := <-watch:
			s.token(tok)
			s.text(tok)
		default:
			done = true
		}
	}
	s.text(tokencache.Redact(first.AccessToken))

	s.mu.Lock()
	defer s.mu.Unlock()
	all := strings.Join(s.texts, "\n") + "\n" + logs.String()
	require.NotEmpty(t, logs.String())
	require.GreaterOrEqual(t, len(s.values), 10)
	leaks := 0
	for v := range s.values {
		if strings.Contains(all, v) {
			leaks++
			where := "log"
			for _, x := range s.texts {
				if strings.Contains(x, v) {
					where = x
					break
				}
			}
			if where == "log" {
				i := strings.Index(logs.String(), v)
				where = "log: " + logs.String()[max(0, i-300):i]
			}
			t.Errorf("a secret (%s) appears in the output, in: %.400s", tokencache.Redact(v), where)
		}
	}
	t.Logf("figures: %d secrets (passwords, API secrets, tokens, signatures) checked against %d log bytes and %d formatted values/errors; %d leaks; logins=%d renewals=%d",
		len(s.values), len(logs.String()), len(s.texts), leaks, fake.Logins(good), fake.Renewals(good))
}
