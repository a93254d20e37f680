package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tradovate"
)

func load(t *testing.T, cmd string, env map[string]string, args ...string) (*config, []string, error) {
	t.Helper()
	f := newFlags(cmd, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	pos, err := f.parse(args)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := f.load()
	return cfg, pos, err
}

func TestFlagsWinOverEnvironmentWhichWinsOverDefaults(t *testing.T) {
	tests := []struct {
		name  string
		cmd   string
		env   map[string]string
		args  []string
		check func(t *testing.T, c *config)
	}{
		{"defaults", "run", nil, nil, func(t *testing.T, c *config) {
			assert.Equal(t, "127.0.0.1:6379", c.redis.single.Addr)
			assert.Equal(t, "credentials.json", c.credentials)
			assert.Equal(t, "default", c.credsSource)
			assert.Equal(t, tradovate.Demo, c.environment)
			assert.Equal(t, "brokertoken", c.prefix)
			assert.True(t, c.legacyKeys, "legacy keys are on by default in run")
			assert.Equal(t, "127.0.0.1:9464", c.listen)
			assert.Equal(t, "text", c.logFormat)
			assert.Equal(t, "info", c.logLevel)
			assert.Equal(t, 10, c.concurrency)
			assert.Equal(t, 15*time.Minute, c.refreshBefore)
			assert.Equal(t, 30*time.Second, c.leeway)
			assert.Equal(t, "", c.alertWebhook)
		}},
		{"legacy keys off by default for token", "token", nil, nil, func(t *testing.T, c *config) {
			assert.False(t, c.legacyKeys)
			assert.Equal(t, "off", c.logLevel)
		}},
		{"environment", "run", map[string]string{
			"REDIS_URL": "redis://envhost:1/3", "BROKERTOKEN_CREDENTIALS": "/etc/bt/creds.json", "TRADOVATE_ENV": "LIVE",
			"TRADOVATE_URL": "http://127.0.0.1:1/v1/", "TRADOVATE_TV_URL": "http://127.0.0.1:2",
			"BROKERTOKEN_PREFIX": "orca", "BROKERTOKEN_LEGACY_KEYS": "off", "BROKERTOKEN_LISTEN": ":9999",
			"BROKERTOKEN_LOG_FORMAT": "json", "BROKERTOKEN_CONCURRENCY": "3", "BROKERTOKEN_REFRESH_BEFORE": "10m",
			"BROKERTOKEN_ALERT_WEBHOOK": "https://discord.com/api/webhooks/1/abc",
		}, nil, func(t *testing.T, c *config) {
			assert.Equal(t, "envhost:1", c.redis.single.Addr)
			assert.Equal(t, 3, c.redis.single.DB)
			assert.Equal(t, "/etc/bt/creds.json", c.credentials)
			assert.Equal(t, "BROKERTOKEN_CREDENTIALS", c.credsSource)
			assert.Equal(t, tradovate.Live, c.environment)
			assert.Equal(t, "http://127.0.0.1:1/v1", c.restURL)
			assert.Equal(t, "http://127.0.0.1:2", c.tvURL)
			assert.Equal(t, "orca", c.prefix)
			assert.False(t, c.legacyKeys)
			assert.Equal(t, ":9999", c.listen)
			assert.Equal(t, "json", c.logFormat)
			assert.Equal(t, 3, c.concurrency)
			assert.Equal(t, 10*time.Minute, c.refreshBefore)
			assert.Equal(t, "discord", c.alertFormat)
		}},
		{"flags win", "run", map[string]string{
			"REDIS_URL": "redis://envhost:1/3", "TRADOVATE_ENV": "live", "BROKERTOKEN_PREFIX": "orca",
			"BROKERTOKEN_LEGACY_KEYS": "false", "BROKERTOKEN_LISTEN": ":9999", "BROKERTOKEN_CONCURRENCY": "3",
			"BROKERTOKEN_ALERT_WEBHOOK": "https://discord.com/api/webhooks/1/abc",
		}, []string{"--redis", "redis://flaghost:2", "--env=demo", "--prefix", "flagged", "--legacy-keys",
			"--listen", "127.0.0.1:1234", "--concurrency", "7", "--alert-webhook", "http://127.0.0.1/hook"},
			func(t *testing.T, c *config) {
				assert.Equal(t, "flaghost:2", c.redis.single.Addr)
				assert.Equal(t, tradovate.Demo, c.environment)
				assert.Equal(t, "flagged", c.prefix)
				assert.True(t, c.legacyKeys)
				assert.Equal(t, "127.0.0.1:1234", c.listen)
				assert.Equal(t, 7, c.concurrency)
				assert.Equal(t, "json", c.alertFormat)
			}},
		{"explicit false flag beats true env", "run", map[string]string{"BROKERTOKEN_LEGACY_KEYS": "true"},
			[]string{"--legacy-keys=false"}, func(t *testing.T, c *config) { assert.False(t, c.legacyKeys) }},
		{"empty --listen disables the server", "run", map[string]string{"BROKERTOKEN_LISTEN": ":9999"},
			[]string{"--listen="}, func(t *testing.T, c *config) { assert.Empty(t, c.listen) }},
		{"empty variable counts as unset", "run", map[string]string{"BROKERTOKEN_PREFIX": " "}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "brokertoken", c.prefix) }},
		{"alert format forced", "run", map[string]string{"BROKERTOKEN_ALERT_WEBHOOK": "http://127.0.0.1/x", "BROKERTOKEN_ALERT_FORMAT": "discord"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "discord", c.alertFormat) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := load(t, tt.cmd, tt.env, tt.args...)
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestFlagsMayFollowArguments(t *testing.T) {
	c, pos, err := load(t, "token", nil, "ACC1", "--prefix", "p1")
	require.NoError(t, err)
	assert.Equal(t, []string{"ACC1"}, pos)
	assert.Equal(t, "p1", c.prefix)

	_, pos, err = load(t, "decode", nil, "--", "-not-a-flag")
	require.NoError(t, err)
	assert.Equal(t, []string{"-not-a-flag"}, pos)
}

func TestBadSettingsNameTheirSource(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad env duration", map[string]string{"BROKERTOKEN_REFRESH_BEFORE": "soon"}, nil, `BROKERTOKEN_REFRESH_BEFORE "soon": want a positive duration`},
		{"bad flag duration", nil, []string{"--leeway", "-1s"}, `--leeway "-1s": want a positive duration`},
		{"unknown environment", map[string]string{"TRADOVATE_ENV": "paper"}, nil, `TRADOVATE_ENV "paper": want demo, live`},
		{"bad bool", map[string]string{"BROKERTOKEN_LEGACY_KEYS": "maybe"}, nil, `BROKERTOKEN_LEGACY_KEYS "maybe": want true or false`},
		{"bad concurrency", nil, []string{"--concurrency", "0"}, `--concurrency "0": want a positive whole number`},
		{"bad log format", map[string]string{"BROKERTOKEN_LOG_FORMAT": "xml"}, nil, `BROKERTOKEN_LOG_FORMAT "xml": want text, json`},
		{"bad rest URL", nil, []string{"--tradovate-url", "ftp://x"}, `--tradovate-url "ftp://x": want an http:// or https:// URL`},
		{"bad webhook keeps its secret", map[string]string{"BROKERTOKEN_ALERT_WEBHOOK": "discord.com/api/webhooks/1/SECRETTOKEN"}, nil, "BROKERTOKEN_ALERT_WEBHOOK: want an http:// or https:// URL"},
		{"bad redis URL keeps its password", map[string]string{"REDIS_URL": "redis://:SECRETPW@h:bad"}, nil, "REDIS_URL: element 1 is not a valid URL"},
		{"bad listen", nil, []string{"--listen", "nonsense"}, `--listen "nonsense": want host:port`},
		{"bad prefix", nil, []string{"--prefix", "a{b}"}, `--prefix "a{b}": want a non-empty name`},
		{"unknown flag", nil, []string{"--bogus"}, "run: flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := load(t, "run", tt.env, tt.args...)
			require.Error(t, err)
			assert.Equal(t, exitUsage, exitCode(err))
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "SECRET")
		})
	}
}
