package radiohook

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"meshroot/radio/chanplan"
	"meshroot/radio/hostapd"
)

// FakeRunner is a Runner for unit tests only: instead of hostapd it starts radio/hostapd's
// protocol Fake on the control socket the configuration names, with the SSID, country and
// channel the file says, so the service's clients, the radio manager and the mesh node talk to
// it as to hostapd. Crash plays a hostapd that dies.
type FakeRunner struct {
	// MACs are the interfaces' addresses (each BSS's BSSID in STATUS).
	MACs map[string]net.HardwareAddr
	// FailStart makes Start fail for these interfaces (a hostapd that cannot start).
	FailStart map[string]bool

	mu     sync.Mutex
	procs  map[string]*FakeProcess
	starts map[string]int
	confs  map[string][]byte
	pid    int
}

// FakeProcess is one fake hostapd.
type FakeProcess struct {
	Fake  *hostapd.Fake
	Iface string
	pid   int
	done  chan struct{}
	once  sync.Once
	err   error
}

// PID implements Process.
func (p *FakeProcess) PID() int { return p.pid }

// Done implements Process.
func (p *FakeProcess) Done() <-chan struct{} { return p.done }

// Err implements Process.
func (p *FakeProcess) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Stop implements Process.
func (p *FakeProcess) Stop() error {
	p.end(nil)
	return nil
}

func (p *FakeProcess) end(err error) {
	p.once.Do(func() {
		p.Fake.Close()
		p.err = err
		close(p.done)
	})
}

// errFakeCrash is how a crashed fake hostapd ended.
var errFakeCrash = errors.New("signal: segmentation fault")

// Start implements Runner.
func (r *FakeRunner) Start(ctx context.Context, conf, pidFile string, out io.Writer) (Process, error) {
	b, err := os.ReadFile(conf)
	if err != nil {
		return nil, err
	}
	kv := confValues(b)
	iface, ctrl := kv["interface"], kv["ctrl_interface"]
	if iface == "" || ctrl == "" {
		return nil, fmt.Errorf("fake hostapd: %s names no interface or ctrl_interface", conf)
	}
	r.mu.Lock()
	if r.procs == nil {
		r.procs, r.starts, r.confs = map[string]*FakeProcess{}, map[string]int{}, map[string][]byte{}
	}
	r.starts[iface]++
	r.confs[iface] = b
	fail := r.FailStart[iface]
	r.pid++
	pid := 1000 + r.pid
	mac := r.MACs[iface]
	r.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("fake hostapd on %s: start refused", iface)
	}
	st := hostapd.FakeState{Phy: "phy-" + iface, Country: kv["country_code"], SSIDs: []string{kv["ssid"]}, Spec: confSpec(kv)}
	if mac != nil {
		st.BSSIDs = []net.HardwareAddr{mac}
	}
	if err := os.MkdirAll(ctrl, 0o755); err != nil {
		return nil, err
	}
	f, err := hostapd.NewFake(ctrl, iface, st)
	if err != nil {
		return nil, err
	}
	p := &FakeProcess{Fake: f, Iface: iface, pid: pid, done: make(chan struct{})}
	if pidFile != "" {
		_ = os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644)
	}
	fmt.Fprintf(out, "%s: interface state UNINITIALIZED->ENABLED\n%s: AP-ENABLED\n", iface, iface)
	r.mu.Lock()
	r.procs[iface] = p
	r.mu.Unlock()
	return p, nil
}

// Process returns the latest fake hostapd on iface (nil before one started).
func (r *FakeRunner) Process(iface string) *FakeProcess {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[iface]
}

// Starts counts the starts on iface.
func (r *FakeRunner) Starts(iface string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts[iface]
}

// Conf returns the configuration the latest start on iface read.
func (r *FakeRunner) Conf(iface string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.confs[iface])
}

// Crash ends the hostapd on iface as a crash would: its control socket goes away and the
// process ends with an error.
func (r *FakeRunner) Crash(iface string) {
	if p := r.Process(iface); p != nil {
		p.end(errFakeCrash)
	}
}

// confValues reads key=value lines of the first BSS (up to a bss= line).
func confValues(b []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if k == "bss" {
			break
		}
		if _, seen := kv[k]; !seen {
			kv[k] = v
		}
	}
	return kv
}

// confSpec is the operating channel a configuration asks for.
func confSpec(kv map[string]string) chanplan.Spec {
	ch, _ := strconv.Atoi(kv["channel"])
	band := chanplan.Band5G
	if kv["hw_mode"] == "g" {
		band = chanplan.Band2G4
	} else if kv["op_class"] != "" {
		band = chanplan.Band6G
	}
	freq, ok := chanplan.ChannelToFreq(band, ch)
	if !ok {
		return chanplan.Spec{}
	}
	width, sec := 20, 0
	switch {
	case kv["vht_oper_chwidth"] == "1" || kv["he_oper_chwidth"] == "1":
		width = 80
	case kv["vht_oper_chwidth"] == "2" || kv["he_oper_chwidth"] == "2":
		width = 160
	case strings.Contains(kv["ht_capab"], "[HT40+]"):
		width, sec = 40, 1
	case strings.Contains(kv["ht_capab"], "[HT40-]"):
		width, sec = 40, -1
	}
	s, err := chanplan.NewSpec(freq, width, sec)
	if err != nil {
		s, _ = chanplan.NewSpec(freq, 20, 0)
	}
	return s
}
