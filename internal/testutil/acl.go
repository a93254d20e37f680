package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	o := s.Options()
	o.Username, o.Password = u.Name, u.Password
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
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
