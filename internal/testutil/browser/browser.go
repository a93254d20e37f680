// Package browser drives a real headless Chromium from tests, over the Chrome DevTools
// Protocol (a websocket, JSON messages), for the pages a human uses: open a URL, type
// into a field, click a button with real mouse events, wait for what the page shows.
//
// It speaks the handful of DevTools methods it needs (Target.createTarget,
// Target.attachToTarget, Page.navigate, Runtime.evaluate, Input.dispatchMouseEvent,
// Input.insertText, Emulation.setDeviceMetricsOverride) through
// github.com/coder/websocket, which the module already uses, rather than a full
// DevTools client library.
//
// Chromium is Debian's chromium package, found on PATH as chromium (or
// chromium-browser, google-chrome). Without it, [Start] skips the test, or fails it
// when BROKERTOKEN_REQUIRE_REAL_REDIS=1 (as CI sets it), so CI never skips a browser
// test silently.
package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/brokertoken/brokertoken/internal/testutil"
)

// Flags are the command-line flags Chromium is started with: headless, no sandbox
// (tests run as root in CI), no GPU, and nothing that talks to the internet.
var Flags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--mute-audio", "--no-default-browser-check",
	"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
}

// names are the executables tried, in order.
var names = []string{"chromium", "chromium-browser", "google-chrome"}

// startTimeout bounds how long Chromium may take to open its DevTools port.
const startTimeout = 30 * time.Second

// Browser is a running headless Chromium. Its methods are safe for concurrent use.
type Browser struct {
	cmd  *exec.Cmd
	dir  string // the fresh --user-data-dir, removed by close
	log  string // Chromium's stdout and stderr
	conn *websocket.Conn
	done chan struct{} // closed when the process has exited

	mu      sync.Mutex // guards the fields below
	nextID  int64
	pending map[int64]chan reply
	readErr error // why the reader stopped; set before pending is failed

	readerDone chan struct{}
	closeOnce  sync.Once
}

// reply is one answer of the DevTools protocol.
type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    string `json:"data"`
	} `json:"error"`
}

// Start launches a headless Chromium with a fresh profile and returns it; t.Cleanup
// closes it and removes the profile. It skips the test when Chromium is not installed
// (or fails it when testutil.EnvRequireReal is "1").
func Start(t testing.TB) *Browser {
	t.Helper()
	bin := ""
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		msg := "browser: chromium not found on PATH (apt-get install chromium)"
		if os.Getenv(testutil.EnvRequireReal) == "1" {
			t.Fatalf("%s (%s=1 forbids skipping)", msg, testutil.EnvRequireReal)
		}
		t.Skip(msg)
	}
	b, err := launch(bin)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Logf("browser: closing: %v", err)
		}
		if t.Failed() {
			t.Logf("chromium output:\n%s", tail(b.log, 40))
		}
		_ = os.RemoveAll(b.dir)
	})
	return b
}

// launch starts bin and connects to its DevTools websocket.
func launch(bin string) (*Browser, error) {
	dir, err := os.MkdirTemp("", "brokertoken-chromium-")
	if err != nil {
		return nil, err
	}
	b := &Browser{dir: dir, log: filepath.Join(dir, "chromium.log"), done: make(chan struct{}),
		pending: map[int64]chan reply{}, readerDone: make(chan struct{})}
	out, err := os.Create(b.log)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	profile := filepath.Join(dir, "profile")
	args := append(append([]string(nil), Flags...), "--user-data-dir="+profile, "about:blank")
	b.cmd = exec.Command(bin, args...)
	b.cmd.Stdout, b.cmd.Stderr = out, out
	b.cmd.SysProcAttr = sysProcAttr()
	if err := b.cmd.Start(); err != nil {
		out.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = b.cmd.Wait()
		out.Close()
		close(b.done)
	}()

	// Chromium writes the port and the browser's websocket path to DevToolsActivePort
	// in the profile once it listens.
	deadline := time.Now().Add(startTimeout)
	var port, path string
	for port == "" {
		raw, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if lines := strings.Split(strings.TrimSpace(string(raw)), "\n"); err == nil && len(lines) == 2 {
			port, path = strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1])
			break
		}
		select {
		case <-b.done:
			b.killGroup()
			return nil, fmt.Errorf("chromium exited before opening its DevTools port:\n%s", tail(b.log, 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.killGroup()
			<-b.done
			return nil, fmt.Errorf("chromium opened no DevTools port within %s:\n%s", startTimeout, tail(b.log, 20))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://127.0.0.1:"+port+path, nil)
	if err != nil {
		b.killGroup()
		<-b.done
		return nil, fmt.Errorf("connect to chromium's DevTools: %w", err)
	}
	conn.SetReadLimit(64 << 20)
	b.conn = conn
	go b.read()
	return b, nil
}

// read dispatches the protocol's answers to their callers until the connection ends;
// events are not used.
func (b *Browser) read() {
	defer close(b.readerDone)
	for {
		_, data, err := b.conn.Read(context.Background())
		if err != nil {
			b.mu.Lock()
			b.readErr = err
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var msg struct {
			ID int64 `json:"id"`
			reply
		}
		if json.Unmarshal(data, &msg) != nil || msg.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		ch := b.pending[msg.ID]
		delete(b.pending, msg.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- msg.reply
		}
	}
}

// call sends one method to the browser (session "") or a page's session and decodes
// its result into out (when not nil).
func (b *Browser) call(ctx context.Context, session, method string, params, out any) error {
	ch := make(chan reply, 1)
	b.mu.Lock()
	if b.readErr != nil {
		err := b.readErr
		b.mu.Unlock()
		return fmt.Errorf("%s: connection to chromium closed: %w", method, err)
	}
	b.nextID++
	id := b.nextID
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if err := b.conn.Write(ctx, websocket.MessageText, raw); err != nil {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: connection to chromium closed", method)
		}
		if r.Error != nil {
			return fmt.Errorf("%s: %s (%d) %s", method, r.Error.Message, r.Error.Code, r.Error.Data)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Close ends the browser: it asks Chromium to close, and kills what is left of its
// process group after five seconds. It is idempotent.
func (b *Browser) Close() error {
	var err error
	b.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.call(ctx, "", "Browser.close", nil, nil)
		cancel()
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			err = errors.New("chromium did not exit within 5s of Browser.close; killed")
		}
		b.killGroup() // helpers Chromium started (crashpad) go with it
		<-b.done
		_ = b.conn.CloseNow()
		<-b.readerDone
	})
	return err
}

// killGroup kills the process group Chromium leads (it was started in its own).
func (b *Browser) killGroup() {
	if b.cmd.Process != nil {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	raw, _ := os.ReadFile(path)
	lines := bytes.Split(bytes.TrimRight(raw, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
