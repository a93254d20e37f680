package tradovate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/brokertoken/brokertoken/internal/secretfile"
)

// Credentials is a set of logins keyed by user name. It implements [CredentialSource]
// and is safe for concurrent use once built (it is never modified).
type Credentials struct {
	list  []Credential
	index map[string]int // username -> position in list

	// Warnings lists problems found while loading that do not stop the load, such as a
	// file readable by group or others. [New] logs them.
	Warnings []string
}

var _ CredentialSource = (*Credentials)(nil)

// NewCredentials checks list (non-empty user names and passwords, no duplicate user)
// and returns it as a Credentials.
func NewCredentials(list ...Credential) (*Credentials, error) {
	c := &Credentials{index: make(map[string]int, len(list))}
	for i, cr := range list {
		if err := c.add(cr); err != nil {
			return nil, fmt.Errorf("tradovate: credential %d: %w", i, err)
		}
	}
	return c, nil
}

func (c *Credentials) add(cr Credential) error {
	if err := cr.validate(); err != nil {
		return err
	}
	if prev, dup := c.index[cr.Username]; dup {
		return fmt.Errorf("username %q already given by entry %d", cr.Username, prev)
	}
	cr.Accounts = append([]string(nil), cr.Accounts...)
	c.index[cr.Username] = len(c.list)
	c.list = append(c.list, cr)
	return nil
}

// LoadCredentials reads a credentials file: a JSON array whose entries are the original
// {"username": "...", "password": "..."} objects, optionally with the other [Credential]
// fields (method, appId, appVersion, cid, sec, deviceId, accounts). Unknown fields are
// rejected. Errors name the file and the entry index, never a password. A file that
// group or others may read loads with a warning in Credentials.Warnings.
func LoadCredentials(path string) (*Credentials, error) {
	data, warning, err := secretfile.Read(path, maxCredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("tradovate: credentials: %w", err)
	}
	c, err := ParseCredentials(path, data)
	if err != nil {
		return nil, err
	}
	if warning != "" {
		c.Warnings = append(c.Warnings, "tradovate: "+warning)
	}
	return c, nil
}

// maxCredentialsFile bounds what LoadCredentials reads.
const maxCredentialsFile = 4 << 20

// ParseCredentials parses the contents of a credentials file (see [LoadCredentials]);
// name is used in error messages only.
func ParseCredentials(name string, data []byte) (*Credentials, error) {
	var raw []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, fmt.Errorf("tradovate: credentials file %s: want a JSON array of {\"username\",\"password\"} objects, found a JSON %s", name, typeErr.Value)
		}
		return nil, fmt.Errorf("tradovate: credentials file %s: %s", name, secretfile.JSONProblem(err))
	}
	if dec.More() || dec.InputOffset() < int64(len(bytes.TrimRight(data, " \t\r\n"))) {
		return nil, fmt.Errorf("tradovate: credentials file %s: unexpected data after the JSON array", name)
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("tradovate: credentials file %s: no credentials", name)
	}
	c := &Credentials{index: make(map[string]int, len(raw))}
	for i, entry := range raw {
		var cr Credential
		d := json.NewDecoder(bytes.NewReader(entry))
		d.DisallowUnknownFields()
		if err := d.Decode(&cr); err != nil {
			return nil, fmt.Errorf("tradovate: credentials file %s: entry %d: %s", name, i, secretfile.JSONProblem(err))
		}
		if err := c.add(cr); err != nil {
			return nil, fmt.Errorf("tradovate: credentials file %s: entry %d: %w", name, i, err)
		}
	}
	return c, nil
}

// Credential returns user's credential, or an error wrapping [ErrUnknownUser].
func (c *Credentials) Credential(_ context.Context, user string) (Credential, error) {
	i, ok := c.index[user]
	if !ok {
		return Credential{}, fmt.Errorf("%w %q", ErrUnknownUser, user)
	}
	cr := c.list[i]
	cr.Accounts = append([]string(nil), cr.Accounts...)
	return cr, nil
}

// Users returns the user names in file order.
func (c *Credentials) Users() []string {
	out := make([]string, len(c.list))
	for i, cr := range c.list {
		out[i] = cr.Username
	}
	return out
}

// Len returns how many credentials c holds.
func (c *Credentials) Len() int { return len(c.list) }
