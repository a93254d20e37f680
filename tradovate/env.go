package tradovate

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Environment variables read by [CredentialsFromEnv].
const (
	EnvUsername   = "TRADOVATE_USERNAME"    // login name (required)
	EnvPassword   = "TRADOVATE_PASSWORD"    // password (required)
	EnvMethod     = "TRADOVATE_METHOD"      // "official" or "tradingview"
	EnvAppID      = "TRADOVATE_APP_ID"      // API key appId
	EnvAppVersion = "TRADOVATE_APP_VERSION" // API key appVersion
	EnvCID        = "TRADOVATE_CID"         // API key cid
	EnvSec        = "TRADOVATE_SEC"         // API key secret
	EnvDeviceID   = "TRADOVATE_DEVICE_ID"   // deviceId override
	EnvAccounts   = "TRADOVATE_ACCOUNTS"    // comma-separated trading sub-accounts
)

// ErrNoEnvCredential is returned by [CredentialsFromEnv] when TRADOVATE_USERNAME is not set.
var ErrNoEnvCredential = errors.New("tradovate: " + EnvUsername + " is not set")

// CredentialsFromEnv returns the single credential described by the TRADOVATE_*
// environment variables (see [EnvUsername] and the constants beside it), for
// twelve-factor deployments. It returns [ErrNoEnvCredential] when TRADOVATE_USERNAME is
// unset, and an error naming the variable when another one is missing or invalid.
func CredentialsFromEnv() (*Credentials, error) {
	return credentialsFromLookup(os.LookupEnv)
}

func credentialsFromLookup(lookup func(string) (string, bool)) (*Credentials, error) {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	user := get(EnvUsername)
	if user == "" {
		return nil, ErrNoEnvCredential
	}
	password, ok := lookup(EnvPassword)
	if !ok || password == "" {
		return nil, fmt.Errorf("tradovate: %s is set but %s is not", EnvUsername, EnvPassword)
	}
	cr := Credential{
		Username:   user,
		Password:   password,
		Method:     Method(strings.ToLower(get(EnvMethod))),
		AppID:      get(EnvAppID),
		AppVersion: get(EnvAppVersion),
		CID:        CID(get(EnvCID)),
		Sec:        get(EnvSec),
		DeviceID:   get(EnvDeviceID),
	}
	for _, a := range strings.Split(get(EnvAccounts), ",") {
		if a = strings.TrimSpace(a); a != "" {
			cr.Accounts = append(cr.Accounts, a)
		}
	}
	c, err := NewCredentials(cr)
	if err != nil {
		return nil, fmt.Errorf("tradovate: credential from environment: %w", errors.Unwrap(err))
	}
	return c, nil
}
