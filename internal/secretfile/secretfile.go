// Package secretfile reads the small files that hold secrets (credentials files): with a
// bound on their size, and a warning when others than the owner may read them.
package secretfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
)

// Read returns the contents of the file at path, refusing one of more than limit
// bytes, and a warning (else "") when group or others may read it. Errors from
// opening or reading the file are the os package's, which name the path (a missing
// file's wraps fs.ErrNotExist).
func Read(path string, limit int64) (data []byte, warning string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	data, err = io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, "", fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	if perm := info.Mode().Perm(); runtime.GOOS != "windows" && perm&0o044 != 0 {
		warning = fmt.Sprintf("credentials file %s is readable by group or others (mode %04o); run chmod 600 on it", path, perm)
	}
	return data, warning, nil
}

// JSONProblem describes a JSON decoding error of such a file (or of a broker's answer
// holding a token) without quoting values from the input, which could be secrets:
// syntax errors give their offset, type errors the field, unknown fields their name.
func JSONProblem(err error) string {
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typeErr):
		if typeErr.Field != "" {
			return fmt.Sprintf("field %q must not be a JSON %s", typeErr.Field, typeErr.Value)
		}
		return fmt.Sprintf("want a JSON object, found a JSON %s", typeErr.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of JSON"
	}
	// Unknown fields ("json: unknown field \"x\"") and the decoders' own errors name
	// only the field.
	return err.Error()
}
