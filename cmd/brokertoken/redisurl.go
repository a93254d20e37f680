package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisTarget is a parsed --redis: a single node or a Cluster.
type redisTarget struct {
	single  *redis.Options        // set for a single node
	cluster *redis.ClusterOptions // set for a Cluster
	display string                // the URL with its password masked, for messages
}

// caFileError is a problem with the --redis-ca file.
type caFileError struct{ err error }

func (e *caFileError) Error() string { return e.err.Error() }

// parseRedisURL parses a Redis URL the way --redis documents it:
//
//   - redis://[user:password@]host[:port][/db][?option=value...]: one node (go-redis's
//     URL options such as dial_timeout=3s are accepted);
//   - rediss://...: the same over TLS (verified against the system roots, or caFile);
//   - unix://[user:password@]/path/to/redis.sock[?db=N]: one node on a socket;
//   - a comma-separated list (redis://h1:7000,redis://h2:7001, or redis://h1:7000,h2:7001)
//     or redis+cluster:// / rediss+cluster:// with one or more hosts: a Redis Cluster,
//     whose seed nodes are the hosts listed.
//
// password is used when the URL carries none (REDIS_PASSWORD). Errors never quote the
// URL, which may hold a password.
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
	base, isCluster := scheme, len(parts) > 1
	switch scheme {
	case "redis", "rediss", "unix":
	case "redis+cluster", "rediss+cluster":
		base, isCluster = strings.TrimSuffix(scheme, "+cluster"), true
	default:
		return nil, fmt.Errorf("unsupported scheme %q: want redis, rediss, redis+cluster or rediss+cluster", scheme)
	}
	if base == "unix" && isCluster {
		return nil, errors.New("a unix:// socket cannot be a Cluster")
	}

	urls := make([]*url.URL, len(parts))
	displays := make([]string, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("element %d of the comma list is empty", i+1)
		}
		if !strings.Contains(p, "://") {
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
		if strings.TrimSuffix(s, "+cluster") != base {
			return nil, fmt.Errorf("element %d uses %s:// but element 1 uses %s://", i+1, s, scheme)
		}
		u.Scheme = base
		urls[i] = u
		displays[i] = u.Redacted()
	}
	t := &redisTarget{display: strings.Join(displays, ",")}

	if !isCluster {
		o, err := redis.ParseURL(urls[0].String())
		if err != nil {
			return nil, errors.New(strings.TrimPrefix(err.Error(), "redis: "))
		}
		if o.Password == "" && password != "" {
			o.Password = password
		}
		o.ContextTimeoutEnabled = true // deadlines bound commands in flight
		t.single = o
	} else {
		o, err := clusterOptions(urls)
		if err != nil {
			return nil, err
		}
		if o.Password == "" && password != "" {
			o.Password = password
		}
		o.ContextTimeoutEnabled = true
		t.cluster = o
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
	return t, nil
}

// clusterOptions builds Cluster options from the seed URLs. Credentials and options may
// be given on any one element; each element adds a seed address.
func clusterOptions(urls []*url.URL) (*redis.ClusterOptions, error) {
	var user *url.Userinfo
	var query url.Values
	addrs := make([]string, 0, len(urls))
	for i, u := range urls {
		if u.Host == "" {
			return nil, fmt.Errorf("element %d has no host", i+1)
		}
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return nil, fmt.Errorf("element %d names database %q, but Redis Cluster has only database 0", i+1, p)
		}
		if u.User != nil {
			if user != nil && u.User.String() != user.String() {
				return nil, fmt.Errorf("element %d has other credentials than an earlier element", i+1)
			}
			user = u.User
		}
		if u.RawQuery != "" {
			if query != nil {
				return nil, fmt.Errorf("element %d has options, and so has an earlier element: give them once", i+1)
			}
			query = u.Query()
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			host, port = u.Host, "6379"
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	skipVerify := false
	if query != nil && query.Has("skip_verify") {
		switch query.Get("skip_verify") {
		case "true", "1":
			skipVerify = true
		case "false", "0", "":
		default:
			return nil, errors.New("option skip_verify: want true or false")
		}
		query.Del("skip_verify")
	}
	seed := url.URL{Scheme: urls[0].Scheme, User: user, Host: addrs[0], RawQuery: query.Encode()}
	o, err := redis.ParseClusterURL(seed.String())
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "redis: "))
	}
	o.Addrs = addrs
	if o.TLSConfig != nil {
		// No fixed ServerName: each node is verified under the host it is dialled by.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify} //nolint:gosec // opt-in
	}
	return o, nil
}

func (t *redisTarget) tlsConfig() *tls.Config {
	if t.cluster != nil {
		return t.cluster.TLSConfig
	}
	return t.single.TLSConfig
}

// isCluster reports whether t is a Redis Cluster.
func (t *redisTarget) isCluster() bool { return t.cluster != nil }

// client returns a new client for t; the caller closes it.
func (t *redisTarget) client() redis.UniversalClient {
	if t.cluster != nil {
		o := *t.cluster
		return redis.NewClusterClient(&o)
	}
	o := *t.single
	return redis.NewClient(&o)
}
