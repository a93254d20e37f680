package tokencache_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

const (
	secretAccess = "eyJraWQiOiI0IiwiYWxnIjoiRWREU0EifQ.SECRET-ACCESS-PART.signature"
	secretMD     = "md-SECRET-market-data-token-value"
)

func secretToken() *tokencache.Token {
	return &tokencache.Token{
		AccessToken:   secretAccess,
		MDAccessToken: secretMD,
		Expiry:        time.Date(2025, 10, 18, 12, 15, 7, 0, time.UTC),
		ObtainedAt:    time.Date(2025, 10, 18, 10, 45, 7, 0, time.UTC),
		Version:       7,
	}
}

func assertRedacted(t *testing.T, out string) {
	t.Helper()
	assert.NotContains(t, out, "SECRET", "output leaks a secret: %s", out)
	assert.NotContains(t, out, secretAccess)
	assert.NotContains(t, out, secretMD)
}

func TestTokenFormattingNeverShowsTheSecret(t *testing.T) {
	tok := secretToken()
	for _, verb := range []string{"%v", "%+v", "%s", "%#v", "%q", "%x", "%X", "%d", "%T %v"} {
		t.Run(verb, func(t *testing.T) {
			assertRedacted(t, fmt.Sprintf(verb, tok))
			assertRedacted(t, fmt.Sprintf(verb, *tok))
			assertRedacted(t, fmt.Sprintf(verb, []*tokencache.Token{tok}))
			assertRedacted(t, fmt.Sprintf(verb, struct{ T tokencache.Token }{*tok}))
		})
	}
	s := tok.String()
	assert.Contains(t, s, "eyJraW…(")
	assert.Contains(t, s, fmt.Sprintf("(%d)", len(secretAccess)))
	assert.Contains(t, s, "Version:7")
	assert.Contains(t, s, "2025-10-18T12:15:07Z")
}

func TestTokenLogsRedacted(t *testing.T) {
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(h(&buf))
			log.Info("got", "token", secretToken(), "value", *secretToken())
			log.Info("any", slog.Any("token", secretToken()))
			out := buf.String()
			assertRedacted(t, out)
			assert.Contains(t, out, "eyJraW")
			assert.Contains(t, out, "version")
		})
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"short", "…(5)"},
		{"exactly12chr", "…(12)"},
		{"abcdefghijklm", "abcdef…(13)"},
		{secretAccess, "eyJraW…(" + fmt.Sprint(len(secretAccess)) + ")"},
	}
	for _, tc := range tests {
		got := tokencache.Redact(tc.in)
		assert.Equal(t, tc.want, got)
		if len(tc.in) > 12 {
			assert.False(t, strings.Contains(got, tc.in[6:]))
		}
	}
}

func TestTokenValid(t *testing.T) {
	now := time.Now()
	var nilTok *tokencache.Token
	assert.False(t, nilTok.Valid(now))
	assert.False(t, (&tokencache.Token{Expiry: now.Add(time.Hour)}).Valid(now))
	assert.False(t, (&tokencache.Token{AccessToken: "a", Expiry: now}).Valid(now))
	require.True(t, (&tokencache.Token{AccessToken: "a", Expiry: now.Add(time.Second)}).Valid(now))
}
