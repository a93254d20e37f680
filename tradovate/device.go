package tradovate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed" // for device.lua
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Tradovate ties a deviceId to a device: it must be unique, and always the same for that
// device; LIVE mode strictly enforces it (the FAQ names a changing deviceId as the cause
// of most live 401s). A fleet that shares one login is one device to the broker, so
// every process presents the same deviceId for a user: the one stored in Redis under
// "<Namespace>:{<user>}:device", generated once by the first official login and never
// changed (see device.lua). A credential's deviceId, else Options.DeviceID, pins it.
// Only without Redis is it derived from this machine's id, which then differs from
// machine to machine.

//go:embed device.lua
var deviceLua string

// deviceScript stores a candidate deviceId unless one is stored; see device.lua.
var deviceScript = redis.NewScript(deviceLua)

// devices chooses the deviceId each official login presents. It is safe for concurrent
// use.
type devices struct {
	opts    *Options
	machine string // this machine's identifier, for derived ids; used only without Redis

	mu     sync.Mutex        // guards used and warned
	used   map[string]string // user -> deviceId this process presented last
	warned map[string]bool   // users whose pinned id differs from the stored one, already logged
}

func newDevices(opts *Options, machine string) *devices {
	return &devices{opts: opts, machine: machine, used: map[string]string{}, warned: map[string]bool{}}
}

// deviceKey is where the fleet's deviceId for user is stored.
func deviceKey(namespace, user string) string { return namespace + ":{" + user + "}:device" }

// resolve returns the deviceId cred's login presents:
//   - pinned (the credential's, else Options.DeviceID): that one, always. It is also
//     stored when Redis holds none, so status commands show it; when Redis holds a
//     different one, a warning is logged once.
//   - with Redis: the stored one. When none is stored, this process stores the id it
//     presented last for the user if it has one (so the fleet's id survives Redis losing
//     its data while any process remembers it), else a new random one.
//   - without Redis: derived from this machine's id and the user name.
//
// It fails, before anything is sent to the broker, when Redis cannot be read and this
// process has no id of its own for the user, or when the stored value is unusable.
func (d *devices) resolve(ctx context.Context, cred Credential) (string, error) {
	user := cred.Username
	pinned := firstSet(cred.DeviceID, d.opts.DeviceID)
	if d.opts.Redis == nil {
		if pinned != "" {
			return pinned, nil
		}
		return deriveDeviceID(d.machine, user), nil
	}
	d.mu.Lock()
	remembered := d.used[user]
	d.mu.Unlock()
	candidate := firstSet(pinned, remembered)
	if candidate == "" {
		candidate = newDeviceID()
	}
	key := deviceKey(d.opts.Namespace, user)
	stored, err := deviceScript.Run(ctx, d.opts.Redis, []string{key}, candidate).Text()
	switch {
	case err != nil && firstSet(pinned, remembered) != "":
		d.opts.Logger.Warn("tradovate: could not read the fleet's deviceId; using the one this process knows",
			"user", user, "device_id", tokencache.Redact(firstSet(pinned, remembered)), "err", err.Error())
		return firstSet(pinned, remembered), nil
	case err != nil:
		return "", redisError(ctx, "reading the deviceId of user "+user, err)
	case pinned != "":
		if stored != pinned {
			d.warnOnce(user, "tradovate: the deviceId pinned for this user differs from the fleet's stored one; using the pinned one",
				"user", user, "pinned", tokencache.Redact(pinned), "stored", tokencache.Redact(stored), "key", key)
		}
		return pinned, nil
	case !validDeviceID(stored):
		return "", fmt.Errorf("tradovate: the deviceId stored under %s is not usable (%d bytes; want 1 to %d printable characters); pin one with the credential's deviceId or Options.DeviceID, or delete the key",
			key, len(stored), maxDeviceIDLen)
	}
	if remembered != "" && stored != remembered {
		d.opts.Logger.Warn("tradovate: the fleet's deviceId for this user changed: Redis lost it and another process stored a new one",
			"user", user, "was", tokencache.Redact(remembered), "now", tokencache.Redact(stored))
	}
	d.mu.Lock()
	d.used[user] = stored
	d.mu.Unlock()
	return stored, nil
}

// warnOnce logs msg the first time it is called for user.
func (d *devices) warnOnce(user, msg string, args ...any) {
	d.mu.Lock()
	first := !d.warned[user]
	d.warned[user] = true
	d.mu.Unlock()
	if first {
		d.opts.Logger.Warn(msg, args...)
	}
}

// newDeviceID returns 32 random hex characters.
func newDeviceID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand does not fail on supported platforms
	return hex.EncodeToString(b)
}

// validDeviceID reports whether id can be sent as a deviceId: 1 to 64 bytes of valid
// text without control characters.
func validDeviceID(id string) bool {
	if id == "" || len(id) > maxDeviceIDLen {
		return false
	}
	for _, r := range id {
		if r == unicode.ReplacementChar || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// ReadDeviceID returns the deviceId an official login of user presents, without
// changing anything, for operators' status commands: the credential's deviceId (when
// opts.Credentials knows the user), else opts.DeviceID, else the one stored in
// opts.Redis (the error wraps [ErrNoDeviceID] when none is stored yet), else, without
// Redis, the one derived from this machine's id. It needs only read access to
// "<Namespace>:{<user>}:device" (Namespace from opts as in [Options]).
func ReadDeviceID(ctx context.Context, opts Options, user string) (string, error) {
	opts.init()
	if opts.Credentials != nil {
		cr, err := opts.Credentials.Credential(ctx, user)
		switch {
		case err == nil && cr.DeviceID != "":
			return cr.DeviceID, nil
		case err != nil && !errors.Is(err, ErrUnknownUser):
			return "", err
		}
	}
	if opts.DeviceID != "" {
		return opts.DeviceID, nil
	}
	if opts.Redis == nil {
		m, err := thisMachine()
		if err != nil {
			return "", err
		}
		return deriveDeviceID(m, user), nil
	}
	if err := validNamespace(opts.Namespace); err != nil {
		return "", err
	}
	key := deviceKey(opts.Namespace, user)
	id, err := opts.Redis.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", fmt.Errorf("%w for user %q (under %s)", ErrNoDeviceID, user, key)
	case err != nil:
		return "", redisError(ctx, "reading the deviceId of user "+user, err)
	case !validDeviceID(id):
		return "", fmt.Errorf("tradovate: the deviceId stored under %s is not usable (%d bytes)", key, len(id))
	}
	return id, nil
}

// machineIDFiles are read in order for a stable per-machine identifier.
var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

// thisMachine returns this machine's identifier (see machineID).
func thisMachine() (string, error) { return machineID(machineIDFiles, os.Hostname) }

// machineID returns a stable identifier of this machine: the first non-empty file of
// paths, else the host name. It never invents a random value: without Redis there is
// nowhere to keep one, and a new deviceId per process brings 401s and device-limit
// trouble.
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
	return "", errors.New("tradovate: no machine id or host name to derive a deviceId from; set Options.DeviceID or Options.Redis")
}

// deriveDeviceID hashes the machine identifier with the user name: stable across
// processes and restarts on one machine, distinct per user, and revealing neither.
// The result is 32 hex characters, well under the 64-character limit.
func deriveDeviceID(machine, user string) string {
	sum := sha256.Sum256([]byte("brokertoken/tradovate deviceId\x00" + machine + "\x00" + user))
	return hex.EncodeToString(sum[:16])
}
