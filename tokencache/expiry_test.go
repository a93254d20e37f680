package tokencache_test

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

// seedJWT is the test vector from the original design notes: an EdDSA token whose
// signature cannot be verified here, but whose claims are readable.
const seedJWT = "eyJraWQiOiI0IiwiYWxnIjoiRWREU0EifQ.eyJzdWIiOiIzODY1NjUxIiwiZXhwIjoxNzYwNzg5NzA3LCJqdGkiOiItNDM4MjEwOTUxMjgyOTcwNTM4NC0xNjMyMDc2ODcwNDU4NzM2NDMiLCJwaHMiOjk4NTY5MzU1MH0.dh1SjFQfE2vN6aixpz3aveEb7p_ElqMfnl9V3bc16zBXmX8IM0zaduP2cS25ZtCBb5CEsMFcKQVKiRoMl2k8Dw"

func hs256(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("k"))
	require.NoError(t, err)
	return s
}

func TestJWTExpiry(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		token  string
		want   time.Time
		wantOK bool
	}{
		{"seed vector", seedJWT, time.Date(2025, 10, 18, 12, 15, 7, 0, time.UTC), true},
		{"exp claim", hs256(t, jwt.MapClaims{"exp": exp.Unix(), "sub": "1"}), exp, true},
		{"no exp claim", hs256(t, jwt.MapClaims{"sub": "1"}), time.Time{}, false},
		{"exp not a number", hs256(t, jwt.MapClaims{"exp": "soon"}), time.Time{}, false},
		{"malformed segments", "eyJhbGciOiJIUzI1NiJ9.!!!.sig", time.Time{}, false},
		{"two segments", "a.b", time.Time{}, false},
		{"opaque string", "Y2xpZW50LXRva2VuLW9wYXF1ZQ", time.Time{}, false},
		{"empty", "", time.Time{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tokencache.JWTExpiry(tc.token)
			require.Equal(t, tc.wantOK, ok)
			assert.True(t, tc.want.Equal(got), "got %s want %s", got, tc.want)
		})
	}
}

func TestResolveExpiry(t *testing.T) {
	obtained := time.Date(2025, 10, 18, 11, 0, 0, 0, time.UTC)
	explicit := time.Date(2025, 10, 18, 12, 30, 0, 0, time.UTC)
	jwtExp := time.Date(2025, 10, 18, 12, 15, 7, 0, time.UTC)
	tests := []struct {
		name     string
		explicit time.Time
		token    string
		want     time.Time
	}{
		{"explicit wins over JWT exp", explicit, seedJWT, explicit},
		{"JWT exp when no explicit expiry", time.Time{}, seedJWT, jwtExp},
		{"default lifetime for an opaque token", time.Time{}, "opaque", obtained.Add(80 * time.Minute)},
		{"default lifetime for a JWT without exp", time.Time{}, hs256(t, jwt.MapClaims{"sub": "x"}), obtained.Add(80 * time.Minute)},
		{"default lifetime for a malformed JWT", time.Time{}, "a.b.c", obtained.Add(80 * time.Minute)},
		{"explicit expiry for an opaque token", explicit, "opaque", explicit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tokencache.ResolveExpiry(tc.explicit, tc.token, obtained, 80*time.Minute)
			assert.True(t, tc.want.Equal(got), "got %s want %s", got, tc.want)
		})
	}
}

func FuzzJWTExpiry(f *testing.F) {
	f.Add(seedJWT)
	f.Add("a.b.c")
	f.Add("")
	f.Add("eyJhbGciOiJub25lIn0.eyJleHAiOjF9.")
	f.Fuzz(func(t *testing.T, s string) {
		exp, ok := tokencache.JWTExpiry(s)
		if !ok && !exp.IsZero() {
			t.Fatalf("not ok but expiry %v", exp)
		}
	})
}
