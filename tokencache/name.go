package tokencache

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameBytes bounds account and user names.
const maxNameBytes = 200

// CheckName returns nil when name may be used as an account or login user name, else
// an error wrapping [ErrInvalidName] that says which rule it breaks. A name must be
// non-empty, at most 200 bytes of printable UTF-8 without spaces, contain no { or }
// (they would break the Redis Cluster hash tag that keeps a user's keys in one slot),
// and no ':' (the legacy key layout names a list after each user, and every other key
// the library or the legacy services use has a ':', so no user can be named like one:
// "token:PA2", "brokertoken:legacy-owner"). Every process applies the same rules
// whatever its options, so a name is valid for all of them or none.
func CheckName(name string) error {
	if plainName(name) {
		return nil
	}
	switch {
	case name == "":
		return ErrEmptyName
	case len(name) > maxNameBytes:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidName, len(name), maxNameBytes)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidName)
	case strings.ContainsAny(name, "{}"):
		return fmt.Errorf("%w: %q contains { or } (they would break the Redis Cluster hash tag)", ErrInvalidName, name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %q contains a space or control character", ErrInvalidName, name)
		}
	}
	if strings.Contains(name, ":") {
		return fmt.Errorf("%w: %q contains ':' (a user's legacy list key would collide with keys such as token:<account>)", ErrInvalidName, name)
	}
	return nil
}

// plainName reports, in one pass over the bytes, whether name is valid by the common
// case: 1 to maxNameBytes printable ASCII characters other than space, braces and ':'.
// Anything else is decided by CheckName's full rules.
func plainName(name string) bool {
	if name == "" || len(name) > maxNameBytes {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c <= ' ' || c >= 0x7f || c == '{' || c == '}' || c == ':':
			return false
		}
	}
	return true
}
