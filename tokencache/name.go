package tokencache

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameBytes bounds account and user names.
const maxNameBytes = 200

// legacyKeyPrefixes start the keys that services predating this library read (see
// Options.LegacyKeys). The legacy layout also keys a LIST by the bare user name, so a
// user named like one of these keys would turn a service's string key into a list.
var legacyKeyPrefixes = []string{"token:", "auth:", "token_expiry:"}

// CheckName returns nil when name may be used as an account or login user name, else
// an error wrapping [ErrInvalidName] that says which rule it breaks. A name must be
// non-empty, at most 200 bytes of printable UTF-8 without spaces, contain no { or }
// (they would break the Redis Cluster hash tag that keeps a user's keys in one slot),
// and not start with "token:", "auth:" or "token_expiry:" (the legacy key layout names
// a list after each user, which would collide with those keys). Every process applies
// the same rules whatever its options, so a name is valid for all of them or none.
func CheckName(name string) error {
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
	for _, p := range legacyKeyPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("%w: %q starts with %q, like the legacy keys (its list key would collide with them)", ErrInvalidName, name, p)
		}
	}
	return nil
}
