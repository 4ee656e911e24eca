package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binary builds cmd/<name> once per test run and returns its path.
func binary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sluice-e2e-bin-")
		if buildErr != nil {
			return
		}
		// nats-server is the version go.mod pins (the one embedded elsewhere), for the
		// clusters of real processes that natsProcs runs.
		out, err := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "../../cmd/worker",
			"../../cmd/ingress", "../../cmd/fakeupstream", "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// proc is a Sluice binary running as a real process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	addr string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProc runs a binary with env (plus PATH) and waits until GET /readyz on addr answers 200.
func startProc(t *testing.T, name, addr string, env map[string]string, args ...string) *proc {
	t.Helper()
	return startProcReady(t, name, addr, "http://"+addr+"/readyz", env, args...)
}

// startProcReady runs a binary with env (plus PATH) and waits until GET ready answers 200.
func startProcReady(t *testing.T, name, addr, ready string, env map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t, name), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{t: t, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{}), addr: addr}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited at start:\n%s", name, p.out.String())
		default:
		}
		if getOK(ready) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready:\n%s", name, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getOK reports whether GET url answers 200.
func getOK(url string) bool {
	c := &httpClient
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// signal sends sig and waits for the process to exit.
func (p *proc) signal(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("process did not exit after %v", sig)
	}
}
