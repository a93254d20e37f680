// Package schwab is the [oauthbroker.Provider] preset of Charles Schwab's Trader API
// (the successor of TD Ameritrade's): its authorization and token endpoints, HTTP Basic
// client authentication with the app key and secret, 30-minute access tokens and
// refresh tokens that last 7 days from the human's authorization. docs/schwab.md
// gives the public source of each fact.
//
//	b, err := oauthbroker.New(oauthbroker.Options{
//		Provider:     schwab.Provider(),
//		ClientID:     appKey,
//		ClientSecret: appSecret,
//		RedirectURL:  "https://ops.example.com/schwab/callback", // the app's callback URL
//		User:         "schwab-main",
//		Redis:        rdb,
//	})
package schwab

import (
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/oauthbroker"
)

// Schwab's public addresses.
const (
	// BaseURL is the root of Schwab's APIs.
	BaseURL = "https://api.schwabapi.com"
	// AuthorizePath is the authorization endpoint, under BaseURL.
	AuthorizePath = "/v1/oauth/authorize"
	// TokenPath is the token endpoint (code exchange and refresh), under BaseURL.
	TokenPath = "/v1/oauth/token"
	// TraderPath is the root of the Trader API (accounts and trading), under BaseURL.
	TraderPath = "/trader/v1"
	// MarketDataPath is the root of the Market Data API, under BaseURL.
	MarketDataPath = "/marketdata/v1"
)

// Schwab's token lifetimes.
const (
	// AccessTokenLifetime is how long an access token lives (expires_in 1800).
	AccessTokenLifetime = 30 * time.Minute
	// RefreshTokenLifetime is how long a refresh token lives, counted from the
	// human's authorization; refreshing does not extend it.
	RefreshTokenLifetime = 7 * 24 * time.Hour
)

// Provider returns Schwab's preset.
func Provider() oauthbroker.Provider { return ProviderAt(BaseURL) }

// ProviderAt returns Schwab's preset with its endpoints under base instead of BaseURL
// (a test fake, a proxy).
func ProviderAt(base string) oauthbroker.Provider {
	base = strings.TrimRight(base, "/")
	return oauthbroker.Provider{
		Name:                 "schwab",
		AuthURL:              base + AuthorizePath,
		TokenURL:             base + TokenPath,
		AuthStyle:            oauth2.AuthStyleInHeader,
		AccessTokenLifetime:  AccessTokenLifetime,
		RefreshTokenLifetime: RefreshTokenLifetime,
		GrantRefused:         GrantRefused,
	}
}

// GrantRefused reports whether a token endpoint error means that the refresh token (or
// code) is refused for good: the standard invalid_grant, and what Schwab answers for an
// expired or invalid refresh token, HTTP 400 with error "unsupported_token_type" whose
// description carries "refresh_token_authentication_error" (or that code itself).
func GrantRefused(code, description string) bool {
	switch code {
	case "invalid_grant", "refresh_token_authentication_error":
		return true
	case "unsupported_token_type":
		return strings.Contains(description, "refresh_token_authentication_error") ||
			strings.Contains(strings.ToLower(description), "refresh token")
	}
	return false
}
