package tradovate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
)

// machineIDFiles are read in order for a stable per-machine identifier.
var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

// machineID returns a stable identifier of this machine: the first non-empty file of
// paths, else the host name. It never invents a random value: Tradovate ties a deviceId
// to the install, and a new one per process brings 401s and device-limit trouble.
func machineID(paths []string, hostname func() (string, error)) (string, error) {
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			if id := strings.TrimSpace(string(b)); id != "" {
				return "machine-id:" + id, nil
			}
		}
	}
	if h, err := hostname(); err == nil && h != "" {
		return "hostname:" + h, nil
	}
	return "", errors.New("tradovate: no machine id or host name to derive a deviceId from; set Options.DeviceID")
}

// deriveDeviceID hashes the machine identifier with the user name: stable across
// processes and restarts on one machine, distinct per user, and revealing neither.
// The result is 32 hex characters, well under the 64-character limit.
func deriveDeviceID(machine, user string) string {
	sum := sha256.Sum256([]byte("brokertoken/tradovate deviceId\x00" + machine + "\x00" + user))
	return hex.EncodeToString(sum[:16])
}

// deviceID returns the deviceId for cred: the credential's, else Options.DeviceID, else
// the derived one.
func (a *Authenticator) deviceID(cred Credential) string {
	switch {
	case cred.DeviceID != "":
		return cred.DeviceID
	case a.opts.DeviceID != "":
		return a.opts.DeviceID
	}
	return deriveDeviceID(a.machine, cred.Username)
}
