package testutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds how long a freshly started redis-server may take
	// to answer PING.
	readyTimeout = 5 * time.Second
	// startAttempts bounds how often a launch is retried when the port was
	// taken between choosing it and redis-server binding it.
	startAttempts = 4
	// logTailLines is how many lines of each log file go into failure
	// messages.
	logTailLines = 30
)

// launchSeq numbers launches so every process gets its own log files, even
// when a Server is restarted in the same directory.
var launchSeq atomic.Int64

// process is one running redis-server child. Its output goes to files in
// its directory, so no goroutine copies pipes; one goroutine waits for the
// process and ends when it exits.
type process struct {
	cmd     *exec.Cmd
	out     *os.File
	done    chan struct{}
	waitErr error // valid once done is closed
	logFile string
	outFile string
}

// startProcess starts bin with args in dir. The server's own log is
// expected at logFile (passed to redis-server via --logfile by the caller);
// anything written to stdout/stderr before the log file is opened (for
// example fatal config errors) goes to outFile.
func startProcess(bin, dir, logFile, outFile string, args []string) (*process, error) {
	out, err := os.OpenFile(outFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{}), logFile: logFile, outFile: outFile}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has already terminated.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill terminates the process with SIGKILL and waits until it is reaped.
// It is safe to call more than once.
func (p *process) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
	_ = p.out.Close()
}

// diagnostics returns the exit status (if any) and the last lines of the
// process's stdout/stderr and log file, for failure messages.
func (p *process) diagnostics() string {
	var b strings.Builder
	if p.exited() {
		fmt.Fprintf(&b, "\nprocess exited: %v", p.waitErr)
	}
	for _, f := range []string{p.outFile, p.logFile} {
		fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", f, tail(f, logTailLines))
	}
	return b.String()
}

// output returns the last lines of the process's stdout/stderr and log
// file, without headers, for classifying failures.
func (p *process) output() string {
	return tail(p.outFile, logTailLines) + "\n" + tail(p.logFile, logTailLines)
}

// tail returns the last n lines of file, or a note why it cannot.
func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "(empty)"
	}
	return strings.Join(lines, "\n")
}

// launchSpec describes how to start one redis-server.
type launchSpec struct {
	bin  string // path of redis-server
	dir  string // working directory (data dir, logs)
	port int    // fixed port; 0 means choose one with pickPort
	// pickPort chooses a port when port is 0; FreePort if nil.
	pickPort func(testing.TB) int
	// args returns the server arguments for the given port, without the
	// common ones (port, bind, dir, persistence, log file) added by launch.
	args func(port int) []string
	// portArgs returns the listening-port arguments; "--port P" if nil.
	portArgs func(port int) []string
	// probe checks readiness of the server at addr; pingPlain if nil.
	probe func(ctx context.Context, addr string) error
}

// startError is returned by launch when the server did not become ready.
type startError struct {
	err    error
	diag   string // exit status and log tails with headers, for messages
	output string // log tails only, for classifying the failure
	addr   string
}

func (e *startError) Error() string {
	return fmt.Sprintf("redis-server on %s did not become ready: %v%s", e.addr, e.err, e.diag)
}

// launch starts a redis-server according to spec and waits until it answers
// the readiness probe. When the server fails because its port is already in
// use, it retries (with a new port unless the port is fixed). It returns the
// running process and its port.
func launch(t testing.TB, spec launchSpec) (*process, int, error) {
	t.Helper()
	pick := spec.pickPort
	if pick == nil {
		pick = FreePort
	}
	portArgs := spec.portArgs
	if portArgs == nil {
		portArgs = func(port int) []string { return []string{"--port", strconv.Itoa(port)} }
	}
	probe := spec.probe
	if probe == nil {
		probe = pingPlain
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		port := spec.port
		if port == 0 {
			port = pick(t)
		}
		seq := launchSeq.Add(1)
		logFile := filepath.Join(spec.dir, fmt.Sprintf("redis-%d.log", seq))
		outFile := filepath.Join(spec.dir, fmt.Sprintf("redis-%d.out", seq))
		args := portArgs(port)
		args = append(args,
			"--bind", "127.0.0.1",
			"--dir", spec.dir,
			"--save", "",
			"--appendonly", "no",
			"--protected-mode", "no",
			"--daemonize", "no",
			"--logfile", logFile,
		)
		if spec.args != nil {
			args = append(args, spec.args(port)...)
		}
		p, err := startProcess(spec.bin, spec.dir, logFile, outFile, args)
		if err != nil {
			return nil, 0, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = waitReady(p, addr, probe)
		if err == nil {
			return p, port, nil
		}
		p.kill()
		se := &startError{err: err, diag: p.diagnostics(), output: p.output(), addr: addr}
		lastErr = se
		if !strings.Contains(se.output, "already in use") {
			break
		}
		if spec.port != 0 {
			// Fixed port: give the previous owner a moment to let go.
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil, 0, lastErr
}

// waitReady polls probe until it succeeds, the process exits, or
// readyTimeout passes.
func waitReady(p *process, addr string, probe func(ctx context.Context, addr string) error) error {
	deadline := time.Now().Add(readyTimeout)
	var err error
	for {
		if p.exited() {
			return errors.New("redis-server exited during startup")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err = probe(ctx, addr)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING within %v: %w", readyTimeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// pingPlain is a readiness probe for a plain TCP redis-server.
func pingPlain(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return pingConn(ctx, conn)
}

// pingConn sends an inline PING on conn, closes it, and accepts any simple
// reply or error except LOADING: a server that answers NOAUTH is up.
func pingConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(line, "-LOADING"):
		return errors.New(strings.TrimSpace(line))
	case strings.HasPrefix(line, "+"), strings.HasPrefix(line, "-"):
		return nil
	default:
		return fmt.Errorf("unexpected reply to PING: %q", line)
	}
}
