package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/brokertoken/brokertoken/tokencache"
)

// maxTokenInput bounds what decode reads from stdin.
const maxTokenInput = 1 << 20

// decoded is a JWT's readable parts.
type decoded struct {
	Token     string          `json:"token"` // redacted
	Header    json.RawMessage `json:"header"`
	Claims    json.RawMessage `json:"claims"`
	ExpiresAt *time.Time      `json:"expires_at,omitempty"`
	ExpiresIn *float64        `json:"expires_in_seconds,omitempty"` // negative once expired
	IssuedAt  *time.Time      `json:"issued_at,omitempty"`
	NotBefore *time.Time      `json:"not_before,omitempty"`
	Verified  bool            `json:"signature_verified"` // always false
}

// cmdDecode prints a JWT's header, claims and expiry without verifying its signature.
// The token comes from args[0], or from stdin when args is empty or "-"; a leading
// "Bearer " is ignored. Only a redacted form of the token itself is printed.
func cmdDecode(args []string, asJSON bool, stdin io.Reader, stdout io.Writer, now time.Time) error {
	var raw string
	switch {
	case len(args) > 1:
		return usagef("decode: want at most one TOKEN: brokertoken decode [TOKEN|-]")
	case len(args) == 1 && args[0] != "-":
		raw = args[0]
	default:
		b, err := io.ReadAll(io.LimitReader(stdin, maxTokenInput))
		if err != nil {
			return fmt.Errorf("decode: reading stdin: %w", err)
		}
		raw = string(b)
	}
	d, err := decodeJWT(raw, now)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "token:      %s (signature not verified)\n", d.Token)
	fmt.Fprintf(&b, "header:     %s\n", compact(d.Header))
	var claims bytes.Buffer
	_ = json.Indent(&claims, d.Claims, "", "  ") // valid JSON: decodeJWT checked it
	fmt.Fprintf(&b, "claims:     %s\n", strings.ReplaceAll(claims.String(), "\n", "\n            "))
	if d.ExpiresAt != nil {
		left := d.ExpiresAt.Sub(now)
		rel := "expires in " + shortDuration(left)
		if left <= 0 {
			rel = "expired " + shortDuration(-left) + " ago"
		}
		fmt.Fprintf(&b, "expires:    %s (%s)\n", d.ExpiresAt.Format(time.RFC3339), rel)
	} else {
		b.WriteString("expires:    unknown (no exp claim)\n")
	}
	if d.IssuedAt != nil {
		fmt.Fprintf(&b, "issued:     %s\n", d.IssuedAt.Format(time.RFC3339))
	}
	if d.NotBefore != nil {
		fmt.Fprintf(&b, "not before: %s\n", d.NotBefore.Format(time.RFC3339))
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

// jwtParser reads JWTs without verifying them (decode holds no key): golang-jwt's
// segment decoding and claim types, numbers kept exact.
var jwtParser = jwt.NewParser(jwt.WithPaddingAllowed(), jwt.WithJSONNumber())

// decodeJWT decodes a JWT without verifying it.
func decodeJWT(raw string, now time.Time) (*decoded, error) {
	raw = strings.TrimSpace(raw)
	if len(raw) > 7 && strings.EqualFold(raw[:7], "bearer ") {
		raw = strings.TrimSpace(raw[7:])
	}
	if raw == "" {
		return nil, errors.New("no token given (pass it as an argument, or on stdin with -)")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT: want 3 dot-separated parts, found %d", len(parts))
	}
	d := &decoded{Token: tokencache.Redact(raw)}
	var err error
	if d.Header, err = segment(parts[0], "header"); err != nil {
		return nil, err
	}
	if d.Claims, err = segment(parts[1], "claims"); err != nil {
		return nil, err
	}
	// Both segments are JSON objects: the only error left is an unknown or missing
	// algorithm, which does not matter when nothing is verified.
	tok, _, err := jwtParser.ParseUnverified(raw, jwt.MapClaims{})
	if err != nil && !errors.Is(err, jwt.ErrTokenUnverifiable) {
		return nil, fmt.Errorf("not a JWT: %w", err)
	}
	claims := tok.Claims.(jwt.MapClaims)
	for _, c := range []struct {
		name string
		get  func() (*jwt.NumericDate, error)
		dst  **time.Time
	}{
		{"exp", claims.GetExpirationTime, &d.ExpiresAt},
		{"iat", claims.GetIssuedAt, &d.IssuedAt},
		{"nbf", claims.GetNotBefore, &d.NotBefore},
	} {
		nd, err := c.get()
		if err != nil || nd != nil && (nd.Unix() < 0 || nd.Unix() > 1e11) {
			return nil, fmt.Errorf("claim %q is not a time in Unix seconds", c.name)
		}
		if nd != nil {
			t := nd.UTC()
			*c.dst = &t
		}
	}
	if d.ExpiresAt != nil {
		secs := math.Round(d.ExpiresAt.Sub(now).Seconds())
		d.ExpiresIn = &secs
	}
	return d, nil
}

// segment decodes one base64url part of a JWT that must hold a JSON object.
func segment(s, name string) (json.RawMessage, error) {
	b, err := jwtParser.DecodeSegment(s)
	if err != nil {
		return nil, fmt.Errorf("not a JWT: the %s is not base64url", name)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("not a JWT: the %s is not a JSON object", name)
	}
	return json.RawMessage(b), nil
}

// compact returns JSON on one line.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}
