package tradovate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Limits of a shape description: it must stay one short log line whatever the answer.
const (
	shapeMaxMembers = 12 // members listed per object; the rest are counted
	shapeMaxKey     = 32 // longer member names are shown by their length only
	shapeMaxDepth   = 2  // objects nested deeper are shown as "object"
)

// describeShape describes the structure of a JSON answer by member names and JSON
// types, never by value, e.g. `{"d": {"token": string, "ttl": number}, "s": string}`.
// It is what an error says about a login answer it does not understand: enough to see
// what the broker changed, nothing that could be a token. Member names longer than
// shapeMaxKey characters, or holding anything but letters, digits, '-', '_' and '.',
// are shown by their length only, since a name could itself carry a secret.
func describeShape(body []byte) string {
	body = bytes.TrimSpace(body)
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil || dec.More() {
		return fmt.Sprintf("not JSON (%d bytes)", len(body))
	}
	var b strings.Builder
	writeShape(&b, v, 0)
	return b.String()
}

func writeShape(b *strings.Builder, v any, depth int) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString("boolean")
	case json.Number:
		b.WriteString("number")
	case string:
		b.WriteString("string")
	case []any:
		fmt.Fprintf(b, "array(%d)", len(x))
	case map[string]any:
		if depth >= shapeMaxDepth {
			b.WriteString("object")
			return
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i == shapeMaxMembers {
				fmt.Fprintf(b, ", …%d more", len(keys)-i)
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(shapeKey(k))
			b.WriteString(": ")
			writeShape(b, x[k], depth+1)
		}
		b.WriteByte('}')
	default:
		b.WriteString("?")
	}
}

// shapeKey quotes a member name that is short and plain, else says only its length.
func shapeKey(k string) string {
	if len(k) > shapeMaxKey || k == "" {
		return fmt.Sprintf("<name of %d bytes>", len(k))
	}
	for _, r := range k {
		ok := r == '-' || r == '_' || r == '.' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')
		if !ok {
			return fmt.Sprintf("<name of %d bytes>", len(k))
		}
	}
	return `"` + k + `"`
}
