package zerodha_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/zerodha"
)

func TestSessionNeverPrintsItsTokens(t *testing.T) {
	s := zerodha.Session{UserID: "AB1234", AccessToken: "accessTOKENvalue0123456789abcdef", PublicToken: "publicTOKENvalue0123456789"}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "session", s, "ptr", &s)
	outputs := []string{logged.String(), s.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outputs = append(outputs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, &s))
	}
	for _, out := range outputs {
		assert.NotContains(t, out, s.AccessToken)
		assert.NotContains(t, out, s.PublicToken)
	}
	assert.Contains(t, s.String(), "AB1234")
	assert.Contains(t, s.String(), "access…(32)")
}

// Every path through the handlers, the Authenticator and the Transport leaves no
// secret in a page, a log line or an error.
func TestNoSecretsInPagesLogsOrErrors(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var texts []string
	add := func(status int, page string) { texts = append(texts, fmt.Sprint(status), page) }

	add(f.login(t))
	add(f.login(t)) // kills the first token
	rt := f.kite.IssueRequestToken(apiKey)
	_, err := f.app.Exchange(ctx, rt)
	require.NoError(t, err)
	_, err = f.app.Exchange(ctx, rt) // used
	require.Error(t, err)
	texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))

	c := f.kiteClient(t, nil)
	f.kite.ExpireAccessTokens()
	for range 3 {
		resp, err := c.Get(f.kite.URL() + "/user/profile")
		if err != nil {
			texts = append(texts, err.Error())
			continue
		}
		resp.Body.Close()
	}
	require.NoError(t, f.app.Logout(ctx, f.kite.AccessTokens()[len(f.kite.AccessTokens())-1]))
	err = f.app.Logout(ctx, "not-a-token-but-long-enough-to-check")
	require.Error(t, err)
	texts = append(texts, err.Error())
	assert.NotContains(t, err.Error(), "not-a-token-but-long-enough-to-check")

	texts = append(texts, f.logs.String())
	all := strings.Join(texts, "\n")
	f.assertNoSecrets(t, "pages, logs and errors", all)
	assert.NotContains(t, all, rt, "request tokens are not shown either")
	assert.Equal(t, 3, f.kite.Calls(kitefake.SessionToken, http.MethodPost, http.StatusOK))
}
