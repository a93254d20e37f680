package tokencache

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	Expiry     int64  `json:"e"`           // Unix milliseconds
	ObtainedAt int64  `json:"o"`           // Unix milliseconds
	RenewAt    int64  `json:"r,omitempty"` // Unix milliseconds; 0: the usual refresh point
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
// error (the value holds a token). The token's strings share raw's memory.
func parseRecord(raw string, now time.Time) parsedRecord {
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
	r, ok := decodeBody(body) // its strings are valid UTF-8
	if !ok && !utf8.ValidString(body) {
		p.err = fmt.Errorf("%w: body is not UTF-8", errCorrupt)
		return p
	}
	if !ok {
		var slow record // its own variable: passing &r would make every read allocate r
		if err := json.Unmarshal([]byte(body), &slow); err != nil {
			p.err = fmt.Errorf("%w: body is not a JSON record", errCorrupt)
			return p
		}
		r = slow
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
	if r.RenewAt > 0 && r.RenewAt < r.Expiry {
		// Only a hint: one out of range (another writer's units?) is ignored, never a
		// reason to call the record corrupt.
		p.tok.RenewAt = time.UnixMilli(r.RenewAt)
	}
	p.by = r.ObtainedBy
	return p
}

// maxUnixMilli bounds times read back, so time arithmetic on them cannot overflow.
const maxUnixMilli = 1 << 50

// parseHeader splits "v1:<version>:<body>". ok is false when raw has no such header (a
// version with a leading zero, a sign or more than maxVersionDigits digits included).
func parseHeader(raw string) (version int64, body string, ok bool) {
	if len(raw) < len(recordHeaderHead) || raw[:len(recordHeaderHead)] != recordHeaderHead {
		return 0, "", false
	}
	rest := raw[len(recordHeaderHead):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n > maxVersionDigits || rest[0] == '0' || n == len(rest) || rest[n] != ':' {
		return 0, "", false
	}
	v, err := strconv.ParseInt(rest[:n], 10, 64)
	if err != nil {
		return 0, "", false // cannot happen with 16 digits
	}
	return v, rest[n+1:], true
}

// otherFormat reports whether raw starts with "v<digits>:" for another format than ours.
func otherFormat(raw string) bool {
	if len(raw) < 3 || raw[0] != 'v' {
		return false
	}
	n := 1
	for n < len(raw) && raw[n] >= '0' && raw[n] <= '9' {
		n++
	}
	return n > 1 && n < len(raw) && raw[n] == ':' && raw[1:n] != recordFormat
}

// headerOf returns raw up to its first colon at most, for error messages: the format,
// never the body.
func headerOf(raw string) string {
	for i, colons := 0, 0; i < len(raw) && i < 24; i++ {
		if raw[i] == ':' {
			if colons++; colons == 1 {
				return raw[:i+1]
			}
		}
	}
	return ""
}

// versionInRange reports whether v is at most maxVersionAhead past now (the rule
// set.lua applies with Redis's clock).
func versionInRange(v int64, now time.Time) bool {
	return v <= now.Add(maxVersionAhead).UnixMicro()
}

// decodeBody reads a body exactly as encodeBody writes it: {"a":S,"m":S,"e":N,"o":N,
// "r":N,"by":S} with "m", "r" and "by" optional, strings without escapes, integers without leading
// zeros. It is the miss path's parser: no allocation (the strings share body's memory).
// Anything else, including every body that needs unescaping, is not ok: the caller then
// reads it with encoding/json, which gives the same record for every body decodeBody
// accepts (FuzzDecodeBody checks that).
func decodeBody(body string) (r record, ok bool) {
	p := bodyParser{s: body}
	if !p.lit(`{"a":`) {
		return r, false
	}
	r.Access, ok = p.str()
	if ok && p.lit(`,"m":`) {
		r.MD, ok = p.str()
	}
	if !ok || !p.lit(`,"e":`) {
		return r, false
	}
	if r.Expiry, ok = p.num(); !ok || !p.lit(`,"o":`) {
		return r, false
	}
	if r.ObtainedAt, ok = p.num(); !ok {
		return r, false
	}
	if p.lit(`,"r":`) {
		if r.RenewAt, ok = p.num(); !ok || r.RenewAt == 0 {
			return r, false // encodeBody omits a zero
		}
	}
	if p.lit(`,"by":`) {
		if r.ObtainedBy, ok = p.str(); !ok {
			return r, false
		}
		r.ObtainedBy = intern(r.ObtainedBy)
	}
	return r, p.lit("}") && p.s == ""
}

// bodyParser consumes a body from the front.
type bodyParser struct{ s string }

func (p *bodyParser) lit(l string) bool {
	if len(p.s) < len(l) || p.s[:len(l)] != l {
		return false
	}
	p.s = p.s[len(l):]
	return true
}

// str reads a JSON string of valid UTF-8 with no escape and no control character.
func (p *bodyParser) str() (string, bool) {
	if p.s == "" || p.s[0] != '"' {
		return "", false
	}
	end := strings.IndexByte(p.s[1:], '"')
	if end < 0 {
		return "", false
	}
	v := p.s[1 : 1+end]
	if strings.IndexByte(v, '\\') >= 0 || hasControl(v) || !utf8.ValidString(v) {
		return "", false
	}
	p.s = p.s[2+end:]
	return v, true
}

// hasControl reports whether s holds a byte below 0x20, eight bytes at a time: a byte
// below 0x20 borrows in the subtraction and had its top bit clear.
func hasControl(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if (x-0x2020202020202020)&^x&0x8080808080808080 != 0 {
			return true
		}
	}
	for ; i < len(s); i++ {
		if s[i] < 0x20 {
			return true
		}
	}
	return false
}

// num reads a JSON integer: an optional minus, then 0 or digits without a leading zero,
// that fits an int64 well (at most 18 digits).
func (p *bodyParser) num() (int64, bool) {
	i, neg := 0, false
	if i < len(p.s) && p.s[i] == '-' {
		i, neg = 1, true
	}
	start := i
	var v int64
	for i < len(p.s) && p.s[i] >= '0' && p.s[i] <= '9' {
		v = v*10 + int64(p.s[i]-'0')
		i++
	}
	n := i - start
	if n == 0 || n > 18 || n > 1 && p.s[start] == '0' {
		return 0, false
	}
	p.s = p.s[i:]
	if neg {
		v = -v
	}
	return v, true
}

// intern returns the constant for how a token was obtained, so reading it allocates
// nothing.
func intern(by string) string {
	for _, k := range []string{"login", "renew", "set", "reseed"} {
		if by == k {
			return k
		}
	}
	return by
}

// encodeBody returns the JSON body of t's record; set.lua puts the header before it.
func encodeBody(t *Token, by string) string {
	b, _ := json.Marshal(record{ // cannot fail: strings and integers only
		Access:     t.AccessToken,
		MD:         t.MDAccessToken,
		Expiry:     t.Expiry.UnixMilli(),
		ObtainedAt: t.ObtainedAt.UnixMilli(),
		RenewAt:    renewAtMilli(t.RenewAt),
		ObtainedBy: by,
	})
	return string(b)
}

// renewAtMilli is t in Unix milliseconds, 0 for the zero time (and for a time at or
// before 1970, which no renewal point is).
func renewAtMilli(t time.Time) int64 {
	if t.IsZero() || t.UnixMilli() <= 0 {
		return 0
	}
	return t.UnixMilli()
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
