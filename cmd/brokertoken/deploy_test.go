package main

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// repoRoot is the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	return root
}

// requireTool returns the path of a program the test needs; without it the test skips,
// or fails when BROKERTOKEN_REQUIRE_REAL_REDIS=1 (CI installs every tool).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(testutil.EnvRequireReal) == "1" {
			t.Fatalf("%s not on PATH (%s=1 forbids skipping): %v", name, testutil.EnvRequireReal, err)
		}
		t.Skipf("%s not on PATH: %v", name, err)
	}
	return path
}

var (
	dockerOnce sync.Once
	dockerPath string
	dockerErr  error
	dockerOut  []byte
)

// dockerBinary builds the daemon with deploy/build.sh, the very command the Dockerfile's
// build stage runs, once, and returns its path.
func dockerBinary(t *testing.T) string {
	t.Helper()
	dockerOnce.Do(func() {
		dockerPath = filepath.Join(binDir, "brokertoken-docker")
		cmd := exec.Command("sh", "deploy/build.sh", dockerPath)
		cmd.Dir = repoRoot(t)
		dockerOut, dockerErr = cmd.CombinedOutput()
	})
	require.NoError(t, dockerErr, "deploy/build.sh: %s", dockerOut)
	return dockerPath
}

// dockerStage is one stage of the Dockerfile: its FROM line and its instructions.
type dockerStage struct {
	from  string
	lines []string // instructions after FROM, continuation lines joined
}

func parseDockerfile(t *testing.T) []dockerStage {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	require.NoError(t, err)
	var stages []dockerStage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		if strings.HasPrefix(strings.ToUpper(line), "FROM ") {
			stages = append(stages, dockerStage{from: line})
			return
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return stages
}

// The Dockerfile builds with deploy/build.sh and ships the binary alone on a distroless
// static image, as a non-root user, with an exec-form entrypoint (the image has no
// shell). The binary that script builds is static and says its version and commit.
func TestDockerImageIsStaticNonRootAndVersioned(t *testing.T) {
	stages := parseDockerfile(t)
	require.Len(t, stages, 2, "a build stage and the final image")
	build, final := stages[0], stages[1]
	assert.Regexp(t, `^FROM golang:\S+ AS build$`, build.from)
	assert.Contains(t, build.lines, `RUN VERSION="$VERSION" COMMIT="$COMMIT" sh deploy/build.sh /out/brokertoken`)
	assert.Regexp(t, `^FROM (gcr\.io/distroless/static-debian\d+:nonroot|scratch)$`, final.from)
	var user, entrypoint string
	for _, l := range final.lines {
		op, arg, _ := strings.Cut(l, " ")
		switch strings.ToUpper(op) {
		case "RUN", "SHELL":
			t.Errorf("the final image has no shell to run %q", l)
		case "USER":
			user = arg
		case "ENTRYPOINT":
			entrypoint = arg
		case "COPY":
			assert.Equal(t, "--from=build /out/brokertoken /usr/local/bin/brokertoken", arg)
		}
	}
	assert.Regexp(t, `^[1-9]\d*:[1-9]\d*$`, user, "a numeric non-root user")
	var argv []string
	require.NoError(t, json.Unmarshal([]byte(entrypoint), &argv), "ENTRYPOINT in exec form")
	assert.Equal(t, []string{"/usr/local/bin/brokertoken"}, argv)

	bin := dockerBinary(t)
	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "a static binary has no program interpreter")
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	assert.Empty(t, libs, "shared libraries")
	assert.Nil(t, f.Section(".debug_info"), "debug symbols are stripped")

	head, err := exec.Command("git", "-C", repoRoot(t), "rev-parse", "HEAD").Output()
	require.NoError(t, err)
	out, err := exec.Command(bin, "version").Output()
	require.NoError(t, err)
	line := strings.TrimSpace(string(out))
	t.Log(line)
	assert.Regexp(t, `^brokertoken v\S+ \(commit `+strings.TrimSpace(string(head))[:12]+`(\+dirty)?(, \d{4}-\d\d-\d\dT\S+)?, go1\.\S+\)$`, line)
	assert.NotContains(t, line, "devel")

	// The -ldflags way, for builds without the checkout.
	ld := filepath.Join(t.TempDir(), "brokertoken")
	cmd := exec.Command("sh", "deploy/build.sh", ld)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "VERSION=v9.8.7", "COMMIT=0123456789abcdef0123")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", b)
	out, err = exec.Command(ld, "version").Output()
	require.NoError(t, err)
	assert.Regexp(t, `^brokertoken v9\.8\.7 \(commit 0123456789ab, go1\.\S+\)\n$`, string(out))
}

// knownEnv is every environment variable the daemon reads.
func knownEnv() map[string]bool {
	known := map[string]bool{"REDIS_PASSWORD": true}
	for _, o := range commandOptions["run"] {
		if o.env != "" {
			known[o.env] = true
		}
	}
	return known
}

// compose.yaml runs Redis and the daemon: the daemon's settings are variables it reads,
// its Redis URL parses and names the redis service, its credentials file is a secret,
// and it runs read-only without capabilities.
func TestComposeFileRunsRedisAndTheDaemon(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "compose.yaml"))
	require.NoError(t, err)
	var c struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Secrets     []string          `yaml:"secrets"`
			ReadOnly    bool              `yaml:"read_only"`
			CapDrop     []string          `yaml:"cap_drop"`
			SecurityOpt []string          `yaml:"security_opt"`
			DependsOn   map[string]any    `yaml:"depends_on"`
			Ports       []string          `yaml:"ports"`
		} `yaml:"services"`
		Secrets map[string]struct {
			File string `yaml:"file"`
		} `yaml:"secrets"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &c))
	require.Contains(t, c.Services, "redis")
	d, ok := c.Services["brokertoken"]
	require.True(t, ok)
	assert.Equal(t, ".", d.Build)
	assert.Equal(t, []string{"run"}, d.Command)
	assert.Contains(t, d.DependsOn, "redis")
	assert.True(t, d.ReadOnly)
	assert.Equal(t, []string{"ALL"}, d.CapDrop)
	assert.Contains(t, d.SecurityOpt, "no-new-privileges:true")
	known := knownEnv()
	for k := range d.Environment {
		assert.True(t, known[k], "compose.yaml sets %s, which the daemon does not read", k)
	}
	target, err := parseRedisURL(d.Environment["REDIS_URL"], "x", "")
	require.NoError(t, err)
	assert.Equal(t, "redis:6379", target.single.Addr)
	require.Len(t, d.Secrets, 1)
	assert.Equal(t, "/run/secrets/"+d.Secrets[0], d.Environment["BROKERTOKEN_CREDENTIALS"])
	assert.NotEmpty(t, c.Secrets[d.Secrets[0]].File)
	assert.Equal(t, ":9464", d.Environment["BROKERTOKEN_LISTEN"], "listens on the container's interfaces")
	assert.Equal(t, []string{"127.0.0.1:9464:9464"}, d.Ports, "published on the host's loopback only")
}

// The systemd unit passes systemd-analyze verify, scores as well hardened in
// systemd-analyze security, runs with a dynamic user, gets its credentials file through
// LoadCredential=, and sets only variables the daemon reads.
func TestSystemdUnitVerifiesAndIsHardened(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze")
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "systemd", "brokertoken.service"))
	require.NoError(t, err)
	unit := string(raw)
	settings := map[string][]string{}
	for _, l := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	assert.Equal(t, []string{"yes"}, settings["DynamicUser"])
	assert.Equal(t, []string{"credentials.json:/etc/brokertoken/credentials.json"}, settings["LoadCredential"])
	assert.Contains(t, settings["Environment"], "BROKERTOKEN_CREDENTIALS=%d/credentials.json")
	assert.Equal(t, []string{"/usr/local/bin/brokertoken run"}, settings["ExecStart"])
	assert.Equal(t, []string{"2"}, settings["RestartPreventExitStatus"], "a configuration error is not retried")
	known := knownEnv()
	for _, e := range settings["Environment"] {
		k, _, _ := strings.Cut(e, "=")
		assert.True(t, known[k], "the unit sets %s, which the daemon does not read", k)
	}

	// systemd-analyze checks that ExecStart exists: point it at a real binary.
	dir := t.TempDir()
	path := filepath.Join(dir, "brokertoken.service")
	require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/brokertoken", binary(t))), 0o644))
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	assert.NoError(t, err, "systemd-analyze verify: %s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify has remarks")
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", path).CombinedOutput()
	assert.NoError(t, err, "exposure above 2.0: %s", out)
	assert.Regexp(t, `Overall exposure level for brokertoken\.service: [01]\.\d`, string(out))

	// And the check is a real one: a broken copy fails it.
	bad := filepath.Join(dir, "broken.service")
	require.NoError(t, os.WriteFile(bad, []byte(strings.ReplaceAll(strings.ReplaceAll(unit, "/usr/local/bin/brokertoken", binary(t)),
		"DynamicUser=yes", "DynamicUser=perhaps")), 0o644))
	_, err = exec.Command(analyze, "verify", bad).CombinedOutput()
	assert.Error(t, err, "a broken unit passes systemd-analyze verify")
}

// promNames returns the metric names a PromQL expression reads: every identifier that
// is not a function, an aggregation, a keyword, a label name or part of a string, a
// duration or a number.
func promNames(expr string) []string {
	for _, re := range []string{
		`"(\\.|[^"\\])*"`, `'(\\.|[^'\\])*'`, "`[^`]*`", // strings
		`\{[^}]*\}`,  // label matchers
		`\[[^\]]*\]`, // ranges and subqueries
		`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`, // label lists
		`\boffset\s+-?\w+`,
		`\b\d+(\.\d+)?([eE][+-]?\d+)?\b`, // numbers
	} {
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "offset": true, "inf": true, "nan": true,
		"atan2": true}
	var names []string
	for _, m := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`).FindAllString(expr, -1) {
		if strings.HasSuffix(m, "(") || keywords[strings.ToLower(m)] {
			continue // a function or aggregation call, or an operator
		}
		names = append(names, m)
	}
	return names
}

func TestPromNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`max by (user) (brokertoken_token_valid) == 0`:                                                   {"brokertoken_token_valid"},
		`sum by (user, kind) (increase(brokertoken_refresh_failures_total{kind=~"captcha|x"}[10m])) > 0`: {"brokertoken_refresh_failures_total"},
		`histogram_quantile(0.9, sum by (le, op) (rate(a_bucket[5m]))) > 30`:                             {"a_bucket"},
		`absent(b) or c offset 1h unless on (x) group_left (y) d`:                                        {"b", "c", "d"},
		`count(x == 1) or vector(0)`:                                                                     {"x"},
		`rate(y[$__rate_interval])`:                                                                      {"y"},
	} {
		assert.Equal(t, want, promNames(expr), expr)
	}
}

// scrapeNames returns the sample names in a /metrics answer.
func scrapeNames(text string) map[string]bool {
	names := map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name := l
		if i := strings.IndexAny(l, "{ "); i >= 0 {
			name = l[:i]
		}
		names[name] = true
	}
	return names
}

// The alert rules and the Grafana dashboard read only series the daemon exports: the
// daemon built as the Dockerfile builds it runs against a real Redis and a fake broker
// (one user logs in, one is refused, so every series exists), and every expression's
// metric names are among those of its /metrics. promtool checks the rules and their
// unit tests, the dashboard's expressions, and the daemon's exposition.
func TestAlertRulesAndDashboardUseOnlyExportedSeries(t *testing.T) {
	promtool := requireTool(t, "promtool")
	f := newFixture(t, tradovatefake.Options{}, userSpec{"good", nil}, userSpec{"bad", nil})
	good, bad := f.users[0], f.users[1]
	f.fake.SetHook(func(c tradovatefake.Call) (tradovatefake.Response, bool) {
		if c.User == bad && c.Endpoint == tradovatefake.Authorize {
			return tradovatefake.ErrorText("Incorrect username or password."), true
		}
		return tradovatefake.Response{}, false
	})
	port := testutil.FreePort(t)
	env := f.env()
	p := &proc{t: t, name: "docker-built run", done: make(chan struct{})}
	p.cmd = exec.Command(dockerBinary(t), "run", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "100ms")
	p.cmd.Env = cleanEnv()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", p.stderr.String())
		}
	})
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	var text string
	require.Eventually(t, func() bool {
		_, text = get(t, metricsURL)
		return strings.Contains(text, fmt.Sprintf(`brokertoken_logins_total{user=%q} 1`, good)) &&
			strings.Contains(text, fmt.Sprintf(`brokertoken_token_expiry_seconds{user=%q}`, good)) &&
			strings.Contains(text, "brokertoken_refresh_failures_total{")
	}, 30*time.Second, 50*time.Millisecond, "the daemon never logged in and failed")
	exported := scrapeNames(text)

	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(text)
	out, err := check.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics: %s", out)

	dir := filepath.Join(repoRoot(t), "deploy", "prometheus")
	out, err = exec.Command(promtool, "check", "rules", filepath.Join(dir, "brokertoken-rules.yml")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	test := exec.Command(promtool, "test", "rules", "brokertoken-rules.test.yml")
	test.Dir = dir
	out, err = test.CombinedOutput()
	require.NoError(t, err, "%s", out)

	raw, err := os.ReadFile(filepath.Join(dir, "brokertoken-rules.yml"))
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &rules))
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	require.NotEmpty(t, exprs)

	raw, err = os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "brokertoken-dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)
	var panelExprs []string
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q", p.Title)
		for _, tg := range p.Targets {
			// Grafana's variables, as Grafana substitutes them.
			e := strings.NewReplacer("$__rate_interval", "5m", "$user", ".*").Replace(tg.Expr)
			panelExprs = append(panelExprs, e)
		}
	}
	exprs = append(exprs, panelExprs...)
	// Exported only for users of other brokers: TestSchwabInTheDaemon checks the series.
	exported["brokertoken_refresh_token_expiry_seconds"] = true
	var missing []string
	for _, e := range exprs {
		names := promNames(e)
		assert.NotEmpty(t, names, "no metric in %q", e)
		for _, n := range names {
			if !exported[n] {
				missing = append(missing, fmt.Sprintf("%s (in %s)", n, e))
			}
		}
	}
	for _, v := range dash.Templating.List {
		if m := regexp.MustCompile(`label_values\((\w+),`).FindStringSubmatch(v.Definition); m != nil && !exported[m[1]] {
			missing = append(missing, m[1]+" (in a dashboard variable)")
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "series the daemon does not export")

	// The dashboard's expressions parse: promtool checks them as recording rules.
	type record struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var recs []record
	for i, e := range panelExprs {
		recs = append(recs, record{Record: fmt.Sprintf("dashboard:panel_%d", i), Expr: e})
	}
	doc, err := yaml.Marshal(map[string]any{"groups": []map[string]any{{"name": "dashboard", "rules": recs}}})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	require.NoError(t, os.WriteFile(path, doc, 0o600))
	out, err = exec.Command(promtool, "check", "rules", path).CombinedOutput()
	require.NoError(t, err, "the dashboard's expressions: %s", out)

	require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
	assert.Equal(t, 0, p.wait(10*time.Second))
	f.assertNoSecrets("daemon output", p.stderr.String()+text)
}
