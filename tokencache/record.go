package tokencache

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// A stored record is a header that carries the version, then a JSON body:
//
//	v1:<version>:{"a":"<access>","m":"<md>","e":<expiry ms>,"o":<obtained ms>,"by":"login"}
//
// The version sits outside the JSON so that set.lua reads it with one anchored pattern
// and compares it as a string, and Go reads it with the same grammar: both sides agree
// on every record, or both call it corrupt. The grammar:
//
//	header  = "v" format ":" version ":"
//	format  = "1"                       (any other digits: a record of another format)
//	version = [1-9][0-9]{0,15}          (at most 16 digits: exact as a Lua double
//	                                     while it is below 2^53, see maxVersionAhead)
//
// A version more than maxVersionAhead past the clock is out of range: the record is
// corrupt (never served, never "newer"), and the script that replaces it does not count
// from it.
const (
	recordFormat     = "1"
	recordHeaderHead = "v" + recordFormat + ":"
	maxVersionDigits = 16
	// maxVersionAhead is how far past the clock a version may be. Versions are the
	// writer's Redis time in microseconds (or one more than the last), so a valid one is
	// never ahead of the clock by more than the clocks' skew; a day is generous.
	maxVersionAhead = 24 * time.Hour
)

// Limits on what is stored. They keep records, messages and the legacy keys small, and
// every arithmetic on them exact.
const (
	// maxTokenBytes bounds the access and market-data tokens (real ones are under 2 KiB;
	// HTTP servers refuse headers much larger than this).
	maxTokenBytes = 16 << 10
	// maxLifetime bounds how far in the future an expiry may be. Farther means a unit
	// mistake (a JWT exp in milliseconds lands in the year 57,000) and would overflow
	// the TTL arithmetic.
	maxLifetime = 366 * 24 * time.Hour
)

// record is the JSON body of a stored token; obtainedBy says how the token was
// obtained. Unknown fields are ignored, so a newer writer may add some.
type record struct {
	Access     string `json:"a"`
	MD         string `json:"m,omitempty"`
	Expiry     int64  `json:"e"` // Unix milliseconds
	ObtainedAt int64  `json:"o"` // Unix milliseconds
	ObtainedBy string `json:"by,omitempty"`
}

// Reasons a stored record is not usable. Test with errors.Is.
var (
	// errCorrupt marks a record that does not parse; the cache treats it as a miss and
	// replaces it.
	errCorrupt = errors.New("tokencache: corrupt token record")
	// ErrRecordFormat is returned when the stored record was written in a format this
	// version of tokencache does not know (by a newer version): it is neither served nor
	// replaced, so two versions of the library never overwrite each other's records.
	ErrRecordFormat = errors.New("tokencache: token record of an unknown format (written by a newer version?)")
)

// parsedRecord is what a stored value says, as both Go and set.lua read it.
type parsedRecord struct {
	tok  *Token // nil unless the record is usable
	by   string // how tok was obtained
	base int64  // the version a compare-and-set replacing it must name; 0: none
	err  error  // errCorrupt or ErrRecordFormat, wrapped with the reason
}

// parseRecord reads a stored value at now. It never panics and never quotes raw in an
// error (the value holds a token).
func parseRecord(raw []byte, now time.Time) parsedRecord {
	version, body, ok := parseHeader(raw)
	switch {
	case !ok && otherFormat(raw):
		return parsedRecord{err: fmt.Errorf("%w: header %.8q", ErrRecordFormat, headerOf(raw))}
	case !ok:
		return parsedRecord{err: fmt.Errorf("%w: no v%s:<version>: header", errCorrupt, recordFormat)}
	}
	p := parsedRecord{base: version}
	if !versionInRange(version, now) {
		p.err = fmt.Errorf("%w: version %d is more than %s past the clock", errCorrupt, version, maxVersionAhead)
		return p
	}
	if !utf8.Valid(body) {
		p.err = fmt.Errorf("%w: body is not UTF-8", errCorrupt)
		return p
	}
	var r record
	if err := json.Unmarshal(body, &r); err != nil {
		p.err = fmt.Errorf("%w: body is not a JSON record", errCorrupt)
		return p
	}
	if r.Access == "" || r.Expiry <= 0 {
		p.err = fmt.Errorf("%w: missing token or expiry", errCorrupt)
		return p
	}
	if r.Expiry > now.Add(maxLifetime+maxVersionAhead).UnixMilli() || r.ObtainedAt < -maxUnixMilli || r.ObtainedAt > maxUnixMilli {
		p.err = fmt.Errorf("%w: expiry or obtained time out of range", errCorrupt)
		return p
	}
	p.tok = &Token{
		AccessToken:   r.Access,
		MDAccessToken: r.MD,
		Expiry:        time.UnixMilli(r.Expiry),
		ObtainedAt:    time.UnixMilli(r.ObtainedAt),
		Version:       version,
	}
	p.by = r.ObtainedBy
	return p
}

// maxUnixMilli bounds times read back, so time arithmetic on them cannot overflow.
const maxUnixMilli = 1 << 50

// parseHeader splits "v1:<version>:<body>". ok is false when raw has no such header (a
// version with a leading zero, a sign or more than maxVersionDigits digits included).
func parseHeader(raw []byte) (version int64, body []byte, ok bool) {
	if len(raw) < len(recordHeaderHead) || string(raw[:len(recordHeaderHead)]) != recordHeaderHead {
		return 0, nil, false
	}
	rest := raw[len(recordHeaderHead):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n > maxVersionDigits || rest[0] == '0' || n == len(rest) || rest[n] != ':' {
		return 0, nil, false
	}
	v, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	if err != nil {
		return 0, nil, false // cannot happen with 16 digits
	}
	return v, rest[n+1:], true
}

// otherFormat reports whether raw starts with "v<digits>:" for another format than ours.
func otherFormat(raw []byte) bool {
	if len(raw) < 3 || raw[0] != 'v' {
		return false
	}
	n := 1
	for n < len(raw) && raw[n] >= '0' && raw[n] <= '9' {
		n++
	}
	return n > 1 && n < len(raw) && raw[n] == ':' && string(raw[1:n]) != recordFormat
}

// headerOf returns raw up to its second colon at most, for error messages: the format
// and version, never the body.
func headerOf(raw []byte) []byte {
	for i, colons := 0, 0; i < len(raw) && i < 24; i++ {
		if raw[i] == ':' {
			if colons++; colons == 1 {
				return raw[:i+1]
			}
		}
	}
	return nil
}

// versionInRange reports whether v is at most maxVersionAhead past now (the rule
// set.lua applies with Redis's clock).
func versionInRange(v int64, now time.Time) bool {
	return v <= now.Add(maxVersionAhead).UnixMicro()
}

// encodeBody returns the JSON body of t's record; set.lua puts the header before it.
func encodeBody(t *Token, by string) string {
	b, _ := json.Marshal(record{ // cannot fail: strings and integers only
		Access:     t.AccessToken,
		MD:         t.MDAccessToken,
		Expiry:     t.Expiry.UnixMilli(),
		ObtainedAt: t.ObtainedAt.UnixMilli(),
		ObtainedBy: by,
	})
	return string(b)
}

// checkStorable returns why t cannot be stored byte for byte and served at now, or
// nil. The tokens must be printable UTF-8 of at most maxTokenBytes (JSON would alter
// other bytes, and a control character would break the HTTP headers they go into);
// the expiry must lie between now and maxLifetime from now.
func checkStorable(t *Token, now time.Time) error {
	for _, f := range []struct{ name, v string }{{"access token", t.AccessToken}, {"market-data token", t.MDAccessToken}} {
		if len(f.v) > maxTokenBytes {
			return fmt.Errorf("%s is %d bytes, more than %d", f.name, len(f.v), maxTokenBytes)
		}
		if !printable(f.v) {
			return fmt.Errorf("%s is not printable UTF-8 (it would not reach other processes byte for byte)", f.name)
		}
	}
	if !now.Before(t.Expiry) {
		return fmt.Errorf("expired at %s", t.Expiry.UTC().Format(time.RFC3339))
	}
	if t.Expiry.Sub(now) > maxLifetime {
		return fmt.Errorf("expiry %s is more than %d days away (a JWT exp in milliseconds?)",
			t.Expiry.UTC().Format(time.RFC3339), int(maxLifetime/(24*time.Hour)))
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}
