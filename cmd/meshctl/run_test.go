package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshroot/firmware/sitelab"
	"meshroot/image"
	"meshroot/image/imagetest"
	"meshroot/internal/testenv"
)

// leftovers lists the namespaces named with prefix and the processes whose command line
// mentions dir (QEMU, charon, FRR of a run in dir).
func leftovers(t *testing.T, prefix, dir string) (nss, procs []string) {
	t.Helper()
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			nss = append(nss, e.Name())
		}
	}
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(dir)) {
			procs = append(procs, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return nss, procs
}

// lockedBuffer is a bytes.Buffer safe for the run's writer and the test's reader.
type lockedBuffer = testenv.Buffer

// TestVMRun runs `meshctl run` twice on one run directory and namespace prefix of its own. The
// first run is a meshctl process that is SIGKILLed once the LAN client's ping to the VPC host
// is answered: QEMU and charon die with it, its namespaces (and FRR's daemons in them) stay
// behind. The second run (in this process) sweeps them, comes up the same way, attaches to the router's console as `meshctl
// site console` does once the LAN ping is answered and the site's Wi-Fi is served on the
// simulated radios, and then loses a part — endpoint 1's charon is killed — and must stop
// with an error naming it and leave no namespace and no process behind. About 1 minute.
func TestVMRun(t *testing.T) {
	testenv.Integration(t)
	for _, c := range []string{"ip", "ping", "charon", "swanctl", "zebra", "bgpd", "vtysh", "qemu-system-aarch64"} {
		testenv.Command(t, c)
	}
	imgDir, _ := imagetest.Image(t, "qemu-virt-arm64")
	suffix := make([]byte, 3)
	rand.Read(suffix)
	prefix := "mrrt" + hex.EncodeToString(suffix)
	// Short: the charon control sockets live under the run directory.
	runDir, err := os.MkdirTemp("", "mrrun-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sweepSite(prefix, runDir)
		os.Remove(lockPath(prefix))
	})

	// Run 1, in a child process, crashes.
	args, _ := json.Marshal([]string{"run", "--image", imgDir, "--run-dir", runDir, "--ns-prefix", prefix, "--plain", "--every", "500ms"})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(args))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var out1 []string
	deadline := time.After(4 * time.Minute)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("meshctl run ended early:\n%s\n%s", strings.Join(out1, "\n"), stderr.String())
			}
			out1 = append(out1, l)
			if strings.Contains(l, sitelab.StepVPCPing) {
				break wait
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("meshctl run: no LAN -> VPC ping after 4 minutes:\n%s\n%s", strings.Join(out1, "\n"), stderr.String())
		}
	}
	t.Logf("run 1 (pid %d) reached the VPC ping:\n%s", cmd.Process.Pid, strings.Join(out1, "\n"))
	cmd.Process.Kill()
	cmd.Wait()
	go io.Copy(io.Discard, stdout)
	// QEMU and charon die with meshctl (parent-death signal); FRR's daemons drop their
	// privileges, which clears that signal: they live on in their namespaces until the sweep.
	var nss, procs []string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		nss, procs = leftovers(t, prefix, runDir)
		procs = slices.DeleteFunc(procs, func(p string) bool {
			return strings.HasPrefix(p, "/usr/lib/frr/zebra ") || strings.HasPrefix(p, "/usr/lib/frr/bgpd ")
		})
		if len(procs) == 0 {
			break
		}
	}
	if len(procs) > 0 {
		t.Errorf("processes of the killed run still running: %q", procs)
	}
	if len(nss) == 0 {
		t.Fatalf("the killed run left no namespaces: the sweep below proves nothing")
	}
	t.Logf("the killed run left %d namespaces", len(nss))

	// Run 2 sweeps them, comes up, attaches to the console, then loses a part.
	m, err := image.ReadManifest(imgDir)
	if err != nil {
		t.Fatal(err)
	}
	var out2 lockedBuffer
	var console lockedBuffer
	attached := false
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var killed int
	var secrets map[string]string
	// With the radios `make run` gives the router: the site's Wi-Fi must be served too.
	kargs, err := withRadios(m.Board, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	wifi := false
	err = runSite(ctx, siteOptions{ImageDir: imgDir, Manifest: m, RunDir: runDir, Prefix: prefix, Stdout: &out2, Every: 500 * time.Millisecond,
		Append: kargs,
		ReadyCheck: func(v *siteView) bool {
			if !v.Reached(sitelab.StepVPCPing) || !v.WiFiServing() || killed != 0 {
				return false
			}
			secrets = v.dev.Secrets()
			wifi = true
			if !attached {
				attached = true
				pr, pw := io.Pipe()
				actx, acancel := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() {
					siteConsoleAttach(actx, filepath.Join(runDir, siteSocket), pr, &console, io.Discard)
					close(done)
				}()
				for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && !strings.Contains(console.String(), "aarch64"); {
					io.WriteString(pw, "\x15uname -m\n")
					time.Sleep(2 * time.Second)
				}
				acancel()
				pw.Close()
				<-done
			}
			ep := v.site.Conc.Endpoints[0].Charon.Process()
			killed = ep.PID()
			syscall.Kill(killed, syscall.SIGKILL)
			return false
		}})
	t.Logf("run 2:\n%s", out2.String())
	if err == nil || !strings.Contains(err.Error(), "endpoint 1's charon") {
		t.Errorf("run 2 after endpoint 1's charon (pid %d) was killed: %v; want an error naming it", killed, err)
	}
	if !wifi || !strings.Contains(out2.String(), "wifi running") {
		t.Errorf("run 2 (%q) never showed the site's Wi-Fi served on both radios", kargs)
	}
	if !strings.Contains(out2.String(), "swept ") {
		t.Errorf("run 2 did not say it swept the killed run's namespaces")
	}
	if !strings.Contains(console.String(), "aarch64") {
		t.Errorf("attached console: no answer to `uname -m`; got:\n%s", console.String())
	}
	if nss, procs := leftovers(t, prefix, runDir); len(nss) > 0 || len(procs) > 0 {
		t.Errorf("after run 2: namespaces %q and processes %q left", nss, procs)
	}
	if !strings.Contains(out2.String(), "torn down:") {
		t.Errorf("run 2 did not report its teardown")
	}
	// Nothing the run shows or keeps in clear holds a secret.
	texts := map[string]string{"output": out2.String(), "attached console": console.String()}
	for _, name := range []string{"site.log", siteConsole, siteStatusFile} {
		b, err := os.ReadFile(filepath.Join(runDir, name))
		if err != nil {
			t.Errorf("run 2's %s: %v", name, err)
		}
		texts[name] = string(b)
	}
	if len(secrets) == 0 {
		t.Errorf("run 2 never reached the VPC ping: no secrets to scan for")
	}
	for where, text := range texts {
		for what, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("run 2's %s shows the %s", where, what)
			}
		}
	}
}
