package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ACLUser is a Redis ACL user made for one test: a user with exactly the rules it was
// given (after "reset"), enabled, with a random password.
type ACLUser struct {
	Name     string
	Password string
}

// newACLUser returns a user name unique to the test and a random password.
func newACLUser(t testing.TB, prefix string) ACLUser {
	t.Helper()
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testutil: random password: %v", err)
	}
	var n [4]byte
	_, _ = rand.Read(n[:])
	return ACLUser{Name: prefix + "-user-" + hex.EncodeToString(n[:]), Password: hex.EncodeToString(b[:])}
}

// setUserArgs is ACL SETUSER name reset on >password rules...
func (u ACLUser) setUserArgs(rules []string) []any {
	args := []any{"ACL", "SETUSER", u.Name, "reset", "on", ">" + u.Password}
	for _, r := range rules {
		args = append(args, r)
	}
	return args
}

// ACLClient creates an ACL user on s with exactly rules (as ACL SETUSER takes them, one
// rule per element: "~key-pattern", "%R~pattern", "&channel", "+command",
// "(+publish &channel)" for a selector; "reset" comes first, so the user starts with
// no rights), and returns a new client that authenticates as that user, closed in
// t.Cleanup. ACL users need redis-server (Redis 7 for selectors): on miniredis the
// test is skipped, or fails under EnvRequireReal=1.
func (s *Server) ACLClient(t testing.TB, rules ...string) *redis.Client {
	t.Helper()
	u := s.ACLUser(t, rules...)
	o := s.Options()
	o.Username, o.Password = u.Name, u.Password
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ACLUser creates the user ACLClient makes and returns its name and password, for
// tests that pass them on (in a Redis URL, to a process). It is deleted in t.Cleanup.
func (s *Server) ACLUser(t testing.TB, rules ...string) ACLUser {
	t.Helper()
	if s.Kind == kindMiniredis {
		skipOrFail(t, "ACL users need redis-server; miniredis has no ACL")
	}
	u := newACLUser(t, s.Prefix)
	admin := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.Do(ctx, u.setUserArgs(rules)...).Err(); err != nil {
		t.Fatalf("testutil: ACL SETUSER %s %s: %v", u.Name, strings.Join(rules, " "), err)
	}
	t.Cleanup(func() { _ = s.adminDelUser(u.Name) })
	return u
}

// ACLRoles reads the ACL SETUSER lines of the repository's README.md ("Roles and Redis
// ACLs"), so tests apply exactly what the README tells operators, and returns each
// role's rules ("writer", "reader", "reporter") for prefix: "brokertoken:" becomes
// prefix+":" except in the keys every prefix shares (the broker namespace
// "brokertoken:tradovate:*" and "brokertoken:legacy-owner", kept as they are), and the
// example list-key pattern "~APEX_*" becomes the test's names (prefix+"-*"). "on" and
// the password are left to ACLUser.
func ACLRoles(t testing.TB, prefix string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(moduleRoot(t), "README.md"))
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	roles := map[string][]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, "ACL SETUSER brokertoken-")
		if !ok {
			continue
		}
		role, rules, _ := strings.Cut(rest, " ")
		for _, r := range splitRules(rules) {
			switch {
			case r == "on" || strings.HasPrefix(r, ">"):
				continue
			case r == "~brokertoken:legacy-owner" || strings.HasSuffix(r, "~brokertoken:tradovate:*"):
			case r == "~APEX_*":
				r = "~" + prefix + "-*"
			default:
				r = strings.ReplaceAll(r, "brokertoken:", prefix+":")
			}
			roles[role] = append(roles[role], r)
		}
	}
	for _, r := range []string{"writer", "reader", "reporter"} {
		if len(roles[r]) == 0 {
			t.Fatalf("testutil: README.md gives no ACL for the %s role", r)
		}
	}
	return roles
}

// splitRules splits ACL rules at spaces, keeping a selector "(...)" whole.
func splitRules(s string) []string {
	var out []string
	depth, start := 0, -1
	for i, c := range s + " " {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		}
		if c == ' ' && depth == 0 {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return out
}

// moduleRoot returns the directory holding the repository's go.mod.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testutil: no go.mod above the working directory")
		}
		dir = parent
	}
}

// adminDelUser removes an ACL user, for cleanups (the server may be stopped already).
func (s *Server) adminDelUser(name string) error {
	c := redis.NewClient(s.Options())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Do(ctx, "ACL", "DELUSER", name).Err()
}

// ACLClient creates the ACL user on every node of the cluster (ACLs are per node) and
// returns a ClusterClient that authenticates as it; see Server.ACLClient for the rules.
func (c *ClusterServer) ACLClient(t testing.TB, rules ...string) *redis.ClusterClient {
	t.Helper()
	u := newACLUser(t, c.Prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range c.addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		err := node.Do(ctx, u.setUserArgs(rules)...).Err()
		_ = node.Close()
		if err != nil {
			t.Fatalf("testutil: ACL SETUSER %s on %s: %v", u.Name, addr, err)
		}
	}
	o := c.Options()
	o.Username, o.Password = u.Name, u.Password
	client := redis.NewClusterClient(o)
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// String shows the user without its password.
func (u ACLUser) String() string { return fmt.Sprintf("ACLUser{%s}", u.Name) }
