package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisTarget is a parsed --redis: a single node, a Cluster, or a master found through
// Sentinel. Exactly one of single, cluster and failover is set.
type redisTarget struct {
	single   *redis.Options
	cluster  *redis.ClusterOptions
	failover *redis.FailoverOptions
	display  string // the URL with its passwords masked, for messages
}

// caFileError is a problem with the --redis-ca file.
type caFileError struct{ err error }

func (e *caFileError) Error() string { return e.err.Error() }

// defaultSentinelPort is the port of a redis+sentinel:// host given without one.
const defaultSentinelPort = "26379"

// parseRedisURL parses a Redis URL the way --redis documents it:
//
//   - redis://[user:password@]host[:port][/db][?option=value...]: one node (go-redis's
//     URL options such as dial_timeout=3s are accepted);
//   - rediss://...: the same over TLS (verified against the system roots, or caFile);
//   - unix://[user:password@]/path/to/redis.sock[?db=N]: one node on a socket;
//   - a Redis Cluster: a comma-separated list (redis://h1:7000,redis://h2:7001, or
//     redis://h1:7000,h2:7001), redis+cluster:// or rediss+cluster:// with one or more
//     hosts, or go-redis's cluster form redis://h1:7000?addr=h2:7001&addr=h3:7002; every
//     host and every addr is a seed node;
//   - a master found through Sentinel: redis+sentinel://[user:password@]s1[:26379][,s2...]/MASTER[/db]
//     (rediss+sentinel:// for TLS; user and password are the master's, sentinel_username
//     and sentinel_password options the sentinels'), or go-redis's failover form
//     redis://[sentineluser:sentinelpassword@]s1:26379?master_name=MASTER&addr=s2:26379&password=...
//
// password is used when the URL gives the data nodes none (REDIS_PASSWORD). Errors never
// quote the URL, which may hold a password.
func parseRedisURL(raw, password, caFile string) (*redisTarget, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errors.New("empty Redis URL")
	}
	parts := strings.Split(raw, ",")
	scheme, _, ok := strings.Cut(strings.TrimSpace(parts[0]), "://")
	if !ok {
		return nil, errors.New("not a URL: want e.g. redis://host:6379/0 or rediss://host:6380/0")
	}
	scheme = strings.ToLower(scheme)
	base, kind := scheme, "single"
	if len(parts) > 1 {
		kind = "cluster"
	}
	switch scheme {
	case "redis", "rediss", "unix":
	case "redis+cluster", "rediss+cluster":
		base, kind = strings.TrimSuffix(scheme, "+cluster"), "cluster"
	case "redis+sentinel", "rediss+sentinel":
		base, kind = strings.TrimSuffix(scheme, "+sentinel"), "sentinel"
	default:
		return nil, fmt.Errorf("unsupported scheme %q: want redis, rediss, unix, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel", scheme)
	}
	if base == "unix" && kind != "single" {
		return nil, errors.New("a unix:// socket cannot be a Cluster")
	}

	urls := make([]*url.URL, len(parts))
	shown := make([]string, len(parts)) // each element's scheme as written; "" for none
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("element %d of the comma list is empty", i+1)
		}
		if s, _, ok := strings.Cut(p, "://"); ok {
			shown[i] = s
		} else {
			p = base + "://" + p
		}
		u, err := url.Parse(p)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // without the URL, which may hold a password
			}
			return nil, fmt.Errorf("element %d is not a valid URL: %v", i+1, err)
		}
		s := strings.ToLower(u.Scheme)
		if s != scheme && s != base {
			return nil, fmt.Errorf("element %d uses %s:// but element 1 uses %s://", i+1, s, scheme)
		}
		u.Scheme = base
		urls[i] = u
	}
	if kind == "single" && base != "unix" {
		// go-redis's own forms: a failover URL names its master, a cluster URL adds seeds.
		q := urls[0].Query()
		switch {
		case q.Has("master_name"):
			kind = "failover-url"
		case q.Has("addr"):
			kind = "cluster"
		}
	}

	t := &redisTarget{display: displayURLs(shown, urls)}
	var err error
	switch kind {
	case "single":
		t.single, err = redis.ParseURL(urls[0].String())
		if err != nil {
			return nil, goRedisURLError(err)
		}
		if t.single.Password == "" {
			t.single.Password = password
		}
		t.single.ContextTimeoutEnabled = true // deadlines bound commands in flight
	case "cluster":
		if t.cluster, err = clusterOptions(urls); err != nil {
			return nil, err
		}
		if t.cluster.Password == "" {
			t.cluster.Password = password
		}
		t.cluster.ContextTimeoutEnabled = true
	case "sentinel", "failover-url":
		if kind == "sentinel" {
			t.failover, err = sentinelOptions(urls)
		} else {
			t.failover, err = failoverURLOptions(urls[0])
		}
		if err != nil {
			return nil, err
		}
		if t.failover.Password == "" {
			t.failover.Password = password
		}
		t.failover.ContextTimeoutEnabled = true
	}

	tlsConf := t.tlsConfig()
	if caFile != "" {
		if tlsConf == nil {
			return nil, &caFileError{errors.New("set, but the Redis URL is not rediss://")}
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, &caFileError{err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &caFileError{fmt.Errorf("%s holds no PEM certificate", caFile)}
		}
		tlsConf.RootCAs = pool
	}
	t.setDialer()
	return t, nil
}

// secretParams are URL query options that hold a password.
var secretParams = []string{"password", "sentinel_password"}

// displayURLs returns the URLs joined again as written (schemes as given in shown, ""
// for an element given without one), with every password masked.
func displayURLs(shown []string, urls []*url.URL) string {
	out := make([]string, len(urls))
	for i, u := range urls {
		c := *u
		if shown[i] != "" {
			c.Scheme = shown[i]
		}
		if c.RawQuery != "" {
			q := c.Query()
			for _, p := range secretParams {
				if q.Has(p) {
					q.Set(p, "xxxxx")
				}
			}
			c.RawQuery = q.Encode()
		}
		out[i] = c.Redacted()
		if shown[i] == "" {
			out[i] = strings.TrimPrefix(out[i], c.Scheme+"://")
		}
	}
	return strings.Join(out, ",")
}

// seedHosts checks the comma-list elements of a Cluster or Sentinel URL and returns
// their addresses (defaultPort when a host has none), their shared credentials, and the
// one element's path and query: each may be given on any one element.
func seedHosts(urls []*url.URL, defaultPort string) (addrs []string, user *url.Userinfo, path string, query url.Values, err error) {
	for i, u := range urls {
		if u.Host == "" {
			return nil, nil, "", nil, fmt.Errorf("element %d has no host", i+1)
		}
		if u.User != nil {
			if user != nil && u.User.String() != user.String() {
				return nil, nil, "", nil, fmt.Errorf("element %d has other credentials than an earlier element", i+1)
			}
			user = u.User
		}
		if p := strings.Trim(u.Path, "/"); p != "" {
			if path != "" {
				return nil, nil, "", nil, fmt.Errorf("element %d has a path, and so has an earlier element: give it once", i+1)
			}
			path = p
		}
		if u.RawQuery != "" {
			if query != nil {
				return nil, nil, "", nil, fmt.Errorf("element %d has options, and so has an earlier element: give them once", i+1)
			}
			query = u.Query()
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			host, port = u.Host, defaultPort
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	if query == nil {
		query = url.Values{}
	}
	return addrs, user, path, query, nil
}

// takeSkipVerify removes the skip_verify option from q and returns its value.
func takeSkipVerify(q url.Values) (bool, error) {
	if !q.Has("skip_verify") {
		return false, nil
	}
	v := q.Get("skip_verify")
	q.Del("skip_verify")
	switch v {
	case "true", "1":
		return true, nil
	case "false", "0", "":
		return false, nil
	}
	return false, errors.New("option skip_verify: want true or false")
}

// clusterOptions builds Cluster options from the seed URLs. Credentials and options may
// be given on any one element; each element, and each addr option, adds a seed address.
func clusterOptions(urls []*url.URL) (*redis.ClusterOptions, error) {
	addrs, user, path, query, err := seedHosts(urls, "6379")
	if err != nil {
		return nil, err
	}
	if path != "" && path != "0" {
		return nil, fmt.Errorf("the URL names database %q, but Redis Cluster has only database 0", path)
	}
	skipVerify, err := takeSkipVerify(query)
	if err != nil {
		return nil, err
	}
	seed := url.URL{Scheme: urls[0].Scheme, User: user, Host: addrs[0], RawQuery: query.Encode()}
	o, err := redis.ParseClusterURL(seed.String())
	if err != nil {
		return nil, goRedisURLError(err)
	}
	// ParseClusterURL lists the seed host, then the addr options.
	for _, a := range o.Addrs[1:] {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	o.Addrs = addrs
	if o.TLSConfig != nil {
		// No fixed ServerName: each node is verified under the host it is dialled by.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify} //nolint:gosec // opt-in
	}
	return o, nil
}

// sentinelOptions builds the options of a redis+sentinel:// URL: the hosts are
// sentinels, the path names the master and the database, the credentials are the
// master's, and sentinel_username and sentinel_password the sentinels'.
func sentinelOptions(urls []*url.URL) (*redis.FailoverOptions, error) {
	addrs, user, path, query, err := seedHosts(urls, defaultSentinelPort)
	if err != nil {
		return nil, err
	}
	segs := strings.Split(path, "/")
	if path == "" || len(segs) > 2 {
		return nil, errors.New("want the master's name in the path: redis+sentinel://host:26379/MASTER[/db]")
	}
	if query.Has("master_name") {
		return nil, errors.New("give the master's name in the path, not as master_name")
	}
	query.Set("master_name", segs[0])
	if len(segs) == 2 {
		if _, err := strconv.Atoi(segs[1]); err != nil {
			return nil, fmt.Errorf("invalid database number: %q", segs[1])
		}
		query.Set("db", segs[1])
	}
	if user != nil {
		query.Set("username", user.Username())
		if pw, ok := user.Password(); ok {
			query.Set("password", pw)
		}
	}
	var sentinelUser *url.Userinfo
	if query.Has("sentinel_password") || query.Has("sentinel_username") {
		sentinelUser = url.UserPassword(query.Get("sentinel_username"), query.Get("sentinel_password"))
		query.Del("sentinel_username")
		query.Del("sentinel_password")
	}
	for _, a := range addrs[1:] {
		query.Add("addr", a)
	}
	u := &url.URL{Scheme: urls[0].Scheme, User: sentinelUser, Host: addrs[0], RawQuery: query.Encode()}
	return failoverURLOptions(u)
}

// goRedisURLError is an error of go-redis's URL parsers without the URL it may quote
// (which may hold a password: a url.Error names the whole URL).
func goRedisURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("not a valid URL: %v", ue.Err)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "redis: "))
}

// failoverURLOptions parses go-redis's failover URL form (see redis.ParseFailoverURL).
func failoverURLOptions(u *url.URL) (*redis.FailoverOptions, error) {
	q := u.Query()
	skipVerify, err := takeSkipVerify(q)
	if err != nil {
		return nil, err
	}
	c := *u
	c.RawQuery = q.Encode()
	o, err := redis.ParseFailoverURL(c.String())
	if err != nil {
		return nil, goRedisURLError(err)
	}
	if o.MasterName == "" {
		return nil, errors.New("option master_name is empty")
	}
	if o.TLSConfig != nil {
		// No fixed ServerName: the sentinels and the master they name are each verified
		// under the host they are dialled by.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify} //nolint:gosec // opt-in
	}
	return o, nil
}

func (t *redisTarget) tlsConfig() *tls.Config {
	switch {
	case t.cluster != nil:
		return t.cluster.TLSConfig
	case t.failover != nil:
		return t.failover.TLSConfig
	}
	return t.single.TLSConfig
}

// setDialer makes TLS connections with a dialer whose handshake errors say what went
// wrong (see tlsDialer).
func (t *redisTarget) setDialer() {
	conf := t.tlsConfig()
	if conf == nil {
		return
	}
	switch {
	case t.cluster != nil:
		t.cluster.Dialer = tlsDialer(conf, t.cluster.DialTimeout)
	case t.failover != nil:
		t.failover.Dialer = tlsDialer(conf, t.failover.DialTimeout)
	default:
		t.single.Dialer = tlsDialer(conf, t.single.DialTimeout)
	}
}

// passwords returns every password of t, for the scrubber.
func (t *redisTarget) passwords() []string {
	switch {
	case t.cluster != nil:
		return []string{t.cluster.Password}
	case t.failover != nil:
		return []string{t.failover.Password, t.failover.SentinelPassword}
	}
	return []string{t.single.Password}
}

// isCluster reports whether t is a Redis Cluster.
func (t *redisTarget) isCluster() bool { return t.cluster != nil }

// client returns a new client for t; the caller closes it.
func (t *redisTarget) client() redis.UniversalClient {
	switch {
	case t.cluster != nil:
		o := *t.cluster
		return redis.NewClusterClient(&o)
	case t.failover != nil:
		o := *t.failover
		return redis.NewFailoverClient(&o)
	}
	o := *t.single
	return redis.NewClient(&o)
}
