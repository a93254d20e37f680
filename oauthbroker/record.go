package oauthbroker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/internal/secretfile"
)

// The two records of a user, written together by the scripts in scripts/ and read as
// "o1:<generation>:<grant>:<JSON>": the generation and the grant outside the JSON, so
// that a Lua script can compare them without parsing JSON. The generation grows by one
// with every refresh and every authorization; the grant is a random id minted by each
// authorization. A compare-and-set on both is what keeps rotation linear: after Redis
// lost its data, generations start again at 1, and only the grant tells a new
// authorization's generation 1 from an old one's.
//
//   - the secret, "<Prefix>:secret:{<User>}:oauth", readable by the writer role only:
//     the refresh token and the newest access token with their expiries.
//   - the status, "<Prefix>:{<User>}:oauth", readable by every role: everything about
//     the grant except tokens (see [Status]).
//
// A refused secret is moved, as it was, to "<Prefix>:secret:{<User>}:oauth:refused"
// (see scripts/revoke.lua).

// recordPrefix starts both records; a newer format would use another.
const recordPrefix = "o1:"

// maxTokenBytes bounds each token a record holds (as tokencache bounds access tokens).
const maxTokenBytes = 16 << 10

// grantBytes is the size of a grant id: 64 random bits, 16 hex digits.
const grantBytes = 8

// newGrantID returns a random grant id.
func newGrantID() string {
	var r [grantBytes]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// validGrantID reports whether s is a grant id as newGrantID makes them.
func validGrantID(s string) bool { return validHex(s, 2*grantBytes) }

// errRecord says a record cannot be read.
var errRecord = errors.New("oauthbroker: unreadable record")

// secret is the body of the secret record.
type secret struct {
	// Family is the generation of the authorization the tokens descend from.
	Family int64 `json:"family"`
	// RefreshToken is the one refresh token the fleet may use next.
	RefreshToken string `json:"refresh_token"`
	// RefreshExpiryMS is when RefreshToken expires (Unix ms), 0 when unknown.
	RefreshExpiryMS int64 `json:"refresh_expiry_ms,omitempty"`
	// AuthorizedMS is when a human authorized the family (Unix ms).
	AuthorizedMS int64 `json:"authorized_ms"`
	// AccessToken is the access token obtained with RefreshToken's predecessor (or the
	// code), handed to the cache; kept so that a process that died before the cache
	// stored it does not cost another refresh.
	AccessToken string `json:"access_token"`
	// AccessExpiryMS is when AccessToken expires (Unix ms), 0 when unknown.
	AccessExpiryMS int64 `json:"access_expiry_ms,omitempty"`
	// ObtainedMS is when AccessToken was obtained (Unix ms).
	ObtainedMS int64 `json:"obtained_ms"`
	// Rotations counts the refreshes since the authorization.
	Rotations int64 `json:"rotations"`
}

// statusBody is the body of the status record.
type statusBody struct {
	Provider        string `json:"provider"`
	State           State  `json:"state"`
	Family          int64  `json:"family"`
	AuthorizedMS    int64  `json:"authorized_ms"`
	RotatedMS       int64  `json:"rotated_ms,omitempty"`
	Rotations       int64  `json:"rotations"`
	RefreshExpiryMS int64  `json:"refresh_expiry_ms,omitempty"`
	SinceMS         int64  `json:"since_ms,omitempty"`
	Detail          string `json:"detail,omitempty"`
}

// header is what a record says before its JSON.
type header struct {
	gen   int64
	grant string
}

// encodeRecord returns "o1:<gen>:<grant>:<json of body>".
func encodeRecord(h header, body any) (string, error) {
	js, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	return recordPrefix + strconv.FormatInt(h.gen, 10) + ":" + h.grant + ":" + string(js), nil
}

// newerFormat reports whether raw starts "o<digits>:" for another format than ours
// (authorize.lua applies the same rule).
func newerFormat(raw string) bool {
	n := 1
	for n < len(raw) && raw[n] >= '0' && raw[n] <= '9' {
		n++
	}
	return len(raw) > 0 && raw[0] == 'o' && n > 1 && n < len(raw) && raw[n] == ':' && raw[:n+1] != recordPrefix
}

// splitRecord returns the header and JSON of a record.
func splitRecord(raw string) (header, []byte, error) {
	rest, ok := strings.CutPrefix(raw, recordPrefix)
	if !ok {
		if newerFormat(raw) {
			return header{}, nil, ErrRecordFormat
		}
		return header{}, nil, fmt.Errorf("%w: does not start with %q", errRecord, recordPrefix)
	}
	num, rest, ok := strings.Cut(rest, ":")
	if !ok {
		return header{}, nil, fmt.Errorf("%w: no generation", errRecord)
	}
	gen, err := strconv.ParseInt(num, 10, 64)
	if err != nil || gen < 1 || num != strconv.FormatInt(gen, 10) {
		return header{}, nil, fmt.Errorf("%w: bad generation", errRecord)
	}
	grant, js, ok := strings.Cut(rest, ":")
	if !ok || !validGrantID(grant) {
		return header{}, nil, fmt.Errorf("%w: bad grant id", errRecord)
	}
	return header{gen: gen, grant: grant}, []byte(js), nil
}

// decodeStrict unmarshals js into v, refusing unknown members and trailing data.
func decodeStrict(js []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s", errRecord, secretfile.JSONProblem(err)) // quotes no stored byte
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data", errRecord)
	}
	return nil
}

// decodeSecret reads a secret record.
func decodeSecret(raw string) (header, *secret, error) {
	h, js, err := splitRecord(raw)
	if err != nil {
		return header{}, nil, err
	}
	var s secret
	if err := decodeStrict(js, &s); err != nil {
		return header{}, nil, err
	}
	switch {
	case !usableToken(s.RefreshToken):
		return header{}, nil, fmt.Errorf("%w: no usable refresh token", errRecord)
	case s.AccessToken != "" && !usableToken(s.AccessToken):
		return header{}, nil, fmt.Errorf("%w: unusable access token", errRecord)
	case s.Family < 1 || s.Family > h.gen || s.Rotations < 0 || s.RefreshExpiryMS < 0 || s.AccessExpiryMS < 0:
		return header{}, nil, fmt.Errorf("%w: inconsistent numbers", errRecord)
	}
	return h, &s, nil
}

// decodeStatus reads a status record.
func decodeStatus(raw string) (header, *statusBody, error) {
	h, js, err := splitRecord(raw)
	if err != nil {
		return header{}, nil, err
	}
	var s statusBody
	if err := decodeStrict(js, &s); err != nil {
		return header{}, nil, err
	}
	switch {
	case s.State != StateActive && s.State != StateRevoked && s.State != StateLost:
		return header{}, nil, fmt.Errorf("%w: unknown state", errRecord)
	case s.Family < 1 || s.Family > h.gen || s.Rotations < 0 || s.RefreshExpiryMS < 0 || s.SinceMS < 0:
		return header{}, nil, fmt.Errorf("%w: inconsistent numbers", errRecord)
	}
	return h, &s, nil
}

// usableToken reports whether s can be stored and sent: non-empty printable ASCII
// without spaces (%x21-7E: RFC 6749's VSCHAR less the space, safe in a header) of at
// most maxTokenBytes.
func usableToken(s string) bool {
	if s == "" || len(s) > maxTokenBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// claim is the rotation marker "<Prefix>:{<User>}:oauth:rotation", stored as
// "<generation>:<grant>:<deadline ms>:<stale-seen ms>:<owner>" (see scripts/begin.lua).
type claim struct {
	gen       int64
	grant     string
	deadline  time.Time // Redis time until which the owner may be using the refresh token
	staleSeen time.Time // when a process first found the deadline passed (zero: not yet)
	owner     string
}

// parseClaim reads a rotation marker.
func parseClaim(raw string) (claim, error) {
	parts := strings.SplitN(raw, ":", 5)
	if len(parts) != 5 || parts[4] == "" || !validGrantID(parts[1]) {
		return claim{}, fmt.Errorf("%w: rotation marker", errRecord)
	}
	var n [3]int64
	for i, p := range []string{parts[0], parts[2], parts[3]} {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return claim{}, fmt.Errorf("%w: rotation marker", errRecord)
		}
		n[i] = v
	}
	c := claim{gen: n[0], grant: parts[1], deadline: time.UnixMilli(n[1]), owner: parts[4]}
	if n[2] > 0 {
		c.staleSeen = time.UnixMilli(n[2])
	}
	return c, nil
}

// msTime converts Unix milliseconds to a time, 0 to the zero time.
func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// timeMS converts a time to Unix milliseconds, the zero time to 0.
func timeMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
