package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRedisURL(t *testing.T) {
	tests := []struct {
		name     string
		url      string
		password string // REDIS_PASSWORD
		cluster  bool
		addrs    []string
		db       int
		user     string
		pass     string
		tls      bool
		display  string
	}{
		{name: "single", url: "redis://127.0.0.1:6379/2", addrs: []string{"127.0.0.1:6379"}, db: 2, display: "redis://127.0.0.1:6379/2"},
		{name: "default port", url: "redis://cache.local", addrs: []string{"cache.local:6379"}, display: "redis://cache.local"},
		{name: "password in URL", url: "redis://:hunter22@h:1", addrs: []string{"h:1"}, pass: "hunter22", display: "redis://:xxxxx@h:1"},
		{name: "user and password", url: "redis://app:hunter22@h:1/0", addrs: []string{"h:1"}, user: "app", pass: "hunter22", display: "redis://app:xxxxx@h:1/0"},
		{name: "password from REDIS_PASSWORD", url: "redis://h:1", password: "fromenv", addrs: []string{"h:1"}, pass: "fromenv"},
		{name: "URL password wins over REDIS_PASSWORD", url: "redis://:inurl@h:1", password: "fromenv", addrs: []string{"h:1"}, pass: "inurl"},
		{name: "TLS (Azure)", url: "rediss://:k3y@orca.redis.cache.windows.net:6380/0", addrs: []string{"orca.redis.cache.windows.net:6380"}, pass: "k3y", tls: true},
		{name: "go-redis options", url: "redis://h:1/0?dial_timeout=3s&max_retries=2", addrs: []string{"h:1"}},
		{name: "comma list of URLs", url: "redis://h1:7000,redis://h2:7001", cluster: true, addrs: []string{"h1:7000", "h2:7001"}},
		{name: "comma list of hosts", url: "redis://:pw99@h1:7000, h2:7001 ,h3", cluster: true, addrs: []string{"h1:7000", "h2:7001", "h3:6379"}, pass: "pw99"},
		{name: "redis+cluster", url: "redis+cluster://h1:7000,h2:7001", cluster: true, addrs: []string{"h1:7000", "h2:7001"}},
		{name: "redis+cluster one seed", url: "redis+cluster://h1:7000", cluster: true, addrs: []string{"h1:7000"}},
		{name: "rediss+cluster", url: "rediss+cluster://:pw99@h1:7000,h2:7001/0", password: "ignored", cluster: true, addrs: []string{"h1:7000", "h2:7001"}, pass: "pw99", tls: true},
		{name: "cluster password from env", url: "redis+cluster://h1:7000", password: "fromenv", cluster: true, addrs: []string{"h1:7000"}, pass: "fromenv"},
		{name: "cluster options", url: "redis+cluster://h1:7000,h2:7001?dial_timeout=2s", cluster: true, addrs: []string{"h1:7000", "h2:7001"}},
		{name: "cluster addr seeds", url: "redis+cluster://h1:7000,h2:7001?addr=h3:7002&addr=h2:7001", cluster: true, addrs: []string{"h1:7000", "h2:7001", "h3:7002"}},
		{name: "go-redis cluster form", url: "redis://:pw99@h1:7000?addr=h2:7001&addr=h3:7002", cluster: true, addrs: []string{"h1:7000", "h2:7001", "h3:7002"}, pass: "pw99", display: "redis://:xxxxx@h1:7000?addr=h2%3A7001&addr=h3%3A7002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRedisURL(tt.url, tt.password, "")
			require.NoError(t, err)
			assert.Equal(t, tt.cluster, got.isCluster())
			if tt.cluster {
				assert.Equal(t, tt.addrs, got.cluster.Addrs)
				assert.Equal(t, tt.pass, got.cluster.Password)
				assert.Equal(t, tt.tls, got.cluster.TLSConfig != nil)
			} else {
				assert.Equal(t, tt.addrs, []string{got.single.Addr})
				assert.Equal(t, tt.db, got.single.DB)
				assert.Equal(t, tt.user, got.single.Username)
				assert.Equal(t, tt.pass, got.single.Password)
				assert.Equal(t, tt.tls, got.single.TLSConfig != nil)
			}
			if tt.display != "" {
				assert.Equal(t, tt.display, got.display)
			}
			if tt.pass != "" {
				assert.NotContains(t, got.display, tt.pass)
			}
			c := got.client()
			require.NoError(t, c.Close())
		})
	}
}

func TestParseRedisURLErrors(t *testing.T) {
	tests := []struct{ name, url, want string }{
		{"empty", " ", "empty Redis URL"},
		{"no scheme", "localhost:6379", "not a URL"},
		{"wrong scheme", "http://h:1", `unsupported scheme "http"`},
		{"bad port", "redis://:topsecret@h:port", "element 1 is not a valid URL"},
		{"bad db", "redis://h:1/x", `invalid database number`},
		{"unknown option", "redis://h:1?bogus=1", "unexpected option: bogus"},
		{"empty element", "redis://h1:1,,h2:2", "element 2 of the comma list is empty"},
		{"mixed TLS", "rediss://h1:1,redis://h2:2", "element 2 uses redis:// but element 1 uses rediss://"},
		{"cluster db", "redis+cluster://h1:1/3", "only database 0"},
		{"cluster two passwords", "redis://:a111@h1:1,redis://:b222@h2:2", "other credentials"},
		{"unix cluster", "unix:///tmp/a.sock,unix:///tmp/b.sock", "cannot be a Cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseRedisURL(tt.url, "", "")
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "topsecret")
			assert.NotContains(t, err.Error(), "a111")
		})
	}
}

func TestRedisCAFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o600))

	_, err := parseRedisURL("redis://h:1", "", bad)
	assert.ErrorContains(t, err, "not rediss://")
	_, err = parseRedisURL("rediss://h:1", "", bad)
	assert.ErrorContains(t, err, "holds no PEM certificate")
	_, err = parseRedisURL("rediss://h:1", "", filepath.Join(dir, "missing.pem"))
	assert.ErrorContains(t, err, "no such file")
}

func TestParseSentinelURL(t *testing.T) {
	tests := []struct {
		name                   string
		url, password          string
		master                 string
		sentinels              []string
		db                     int
		user, pass             string
		sentinelUser, sentPass string
		tls                    bool
		display                string
	}{
		{name: "one sentinel, default port", url: "redis+sentinel://s1/mymaster", master: "mymaster", sentinels: []string{"s1:26379"}},
		{name: "comma list, db, options on the last element", url: "redis+sentinel://:mpw1@s1:26379,s2:26380/orca/2?dial_timeout=2s",
			master: "orca", sentinels: []string{"s1:26379", "s2:26380"}, db: 2, pass: "mpw1", display: "redis+sentinel://:xxxxx@s1:26379,s2:26380/orca/2?dial_timeout=2s"},
		{name: "sentinel credentials", url: "redis+sentinel://app:mpw1@s1,s2/m?sentinel_username=sen&sentinel_password=spw1",
			master: "m", sentinels: []string{"s1:26379", "s2:26379"}, user: "app", pass: "mpw1", sentinelUser: "sen", sentPass: "spw1"},
		{name: "TLS", url: "rediss+sentinel://s1:26379/m", master: "m", sentinels: []string{"s1:26379"}, tls: true},
		{name: "REDIS_PASSWORD for the master", url: "redis+sentinel://s1/m", password: "fromenv", master: "m", sentinels: []string{"s1:26379"}, pass: "fromenv"},
		{name: "go-redis failover form", url: "redis://sen:spw1@s1:26379/1?master_name=m&addr=s2:26379&password=mpw1",
			master: "m", sentinels: []string{"s1:26379", "s2:26379"}, db: 1, pass: "mpw1", sentinelUser: "sen", sentPass: "spw1",
			display: "redis://sen:xxxxx@s1:26379/1?addr=s2%3A26379&master_name=m&password=xxxxx"},
		{name: "go-redis failover form over TLS", url: "rediss://s1:26379?master_name=m&skip_verify=true", master: "m", sentinels: []string{"s1:26379"}, tls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRedisURL(tt.url, tt.password, "")
			require.NoError(t, err)
			o := got.failover
			require.NotNil(t, o)
			assert.Equal(t, tt.master, o.MasterName)
			assert.Equal(t, tt.sentinels, o.SentinelAddrs)
			assert.Equal(t, tt.db, o.DB)
			assert.Equal(t, tt.user, o.Username)
			assert.Equal(t, tt.pass, o.Password)
			assert.Equal(t, tt.sentinelUser, o.SentinelUsername)
			assert.Equal(t, tt.sentPass, o.SentinelPassword)
			assert.Equal(t, tt.tls, o.TLSConfig != nil)
			assert.Equal(t, tt.tls, o.Dialer != nil, "TLS connections use the dialer that reports handshake errors")
			assert.True(t, o.ContextTimeoutEnabled)
			if tt.display != "" {
				assert.Equal(t, tt.display, got.display)
			}
			for _, secret := range []string{"mpw1", "spw1"} {
				assert.NotContains(t, got.display, secret)
			}
			assert.Contains(t, got.passwords(), tt.pass)
			require.NoError(t, got.client().Close())
		})
	}

	for _, bad := range []struct{ name, url, want string }{
		{"no master", "redis+sentinel://s1:26379", "want the master's name in the path"},
		{"too deep a path", "redis+sentinel://s1/m/0/x", "want the master's name in the path"},
		{"bad db", "redis+sentinel://s1/m/x", `invalid database number: "x"`},
		{"master twice", "redis+sentinel://s1/m?master_name=n", "not as master_name"},
		{"path twice", "redis+sentinel://s1/m,s2/n", "give it once"},
		{"empty master_name", "redis://s1:26379?master_name=", "master_name is empty"},
		{"unknown option", "redis+sentinel://:topsecret@s1/m?bogus=1", "unexpected option: bogus"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, err := parseRedisURL(bad.url, "", "")
			require.Error(t, err)
			assert.Contains(t, err.Error(), bad.want)
			assert.NotContains(t, err.Error(), "topsecret")
		})
	}
}

// FuzzParseRedisURL: no input panics; a URL is one kind (node, Cluster or Sentinel) or
// an error; and no password given in the URL (user info or a password option) shows in
// the error or the display form.
func FuzzParseRedisURL(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379/0", "rediss://:k3yS3cret@h:6380/0", "unix:///tmp/r.sock?db=2",
		"redis://h1:7000,h2:7001", "redis+cluster://:pw99xx@h1,h2:7001?dial_timeout=2s",
		"redis://h1:7000?addr=h2:7001&addr=h3:7002", "redis+sentinel://app:mpw1xx@s1,s2:26380/m/1?sentinel_password=spw1xx",
		"rediss+sentinel://s1/m", "redis://sen:spw1xx@s1:26379?master_name=m&addr=s2:26379&password=mpw1xx",
		"redis://:p@ss@h:1", "redis+sentinel://s1/m,s2/n", "rediss://h?skip_verify=maybe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := parseRedisURL(raw, "", "")
		var secrets []string
		for _, p := range strings.Split(raw, ",") {
			p = strings.TrimSpace(p)
			if !strings.Contains(p, "://") {
				p = "redis://" + p
			}
			u, perr := url.Parse(p)
			if perr != nil {
				continue
			}
			if pw, ok := u.User.Password(); ok {
				secrets = append(secrets, pw)
			}
			for _, k := range secretParams {
				secrets = append(secrets, u.Query()[k]...)
			}
		}
		shown := ""
		if err != nil {
			shown = err.Error()
		} else {
			shown = got.display
			kinds := 0
			for _, set := range []bool{got.single != nil, got.cluster != nil, got.failover != nil} {
				if set {
					kinds++
				}
			}
			if kinds != 1 {
				t.Fatalf("%q: %d kinds", raw, kinds)
			}
		}
		for _, s := range secrets {
			// A password that appears once in the URL can only show by leaking.
			if len(s) >= 4 && strings.Count(raw, s) == 1 && strings.Contains(shown, s) {
				t.Fatalf("%q: the password %q shows in %q", raw, s, shown)
			}
		}
	})
}
