package secretfile

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private.json")
	require.NoError(t, os.WriteFile(private, []byte(`[]`), 0o600))
	data, warning, err := Read(private, 10)
	require.NoError(t, err)
	assert.Equal(t, "[]", string(data))
	assert.Empty(t, warning)

	if runtime.GOOS != "windows" {
		shared := filepath.Join(dir, "shared.json")
		require.NoError(t, os.WriteFile(shared, []byte(`[]`), 0o600))
		require.NoError(t, os.Chmod(shared, 0o640))
		_, warning, err = Read(shared, 10)
		require.NoError(t, err)
		assert.Equal(t, "credentials file "+shared+" is readable by group or others (mode 0640); run chmod 600 on it", warning)
	}

	big := filepath.Join(dir, "big.json")
	require.NoError(t, os.WriteFile(big, []byte(strings.Repeat("x", 11)), 0o600))
	data, _, err = Read(big, 10)
	assert.Nil(t, data)
	assert.EqualError(t, err, big+": larger than 10 bytes")
	data, _, err = Read(big, 11)
	require.NoError(t, err, "exactly the limit is read")
	assert.Len(t, data, 11)

	_, _, err = Read(filepath.Join(dir, "missing.json"), 10)
	assert.True(t, errors.Is(err, fs.ErrNotExist), "%v", err)
}

func TestJSONProblemQuotesNoValue(t *testing.T) {
	const secret = "hunter2-secret"
	decode := func(in string) error {
		var v struct {
			Password int `json:"password"`
		}
		d := json.NewDecoder(strings.NewReader(in))
		d.DisallowUnknownFields()
		return d.Decode(&v)
	}
	for in, want := range map[string]string{
		`{"password": "` + secret + `"}`: `field "password" must not be a JSON string`,
		`{"password": 1, ` + secret:      "invalid JSON at byte 17",
		`["` + secret + `"]`:             "want a JSON object, found a JSON array",
		`{"password": 1, "x": 2}`:        `json: unknown field "x"`,
		`{"password": `:                  "unexpected end of JSON",
	} {
		got := JSONProblem(decode(in))
		assert.Equal(t, want, got, in)
		assert.NotContains(t, got, secret)
	}
}
