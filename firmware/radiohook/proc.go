package radiohook

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"meshroot/radio/hostapd"
)

// radioProc supervises one radio's hostapd: start it, connect the service's own control client,
// read its STATUS, restart it with backoff when it ends, restart it at once for a new
// configuration, stop it (only this process) when the service stops.
type radioProc struct {
	s     *Service
	id    string
	iface string
	ctrl  string
	conf  string
	pid   string
	log   *slog.Logger

	update chan struct{}
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once

	mu       sync.Mutex
	state    string
	pidNum   int
	restarts int
	lastErr  string
	client   *hostapd.Client
	st       hostapd.Status
	stOK     bool
	enabled  bool
}

func (s *Service) newProc(rp RadioPlan, conf string) *radioProc {
	return &radioProc{s: s, id: rp.Radio.ID, iface: rp.Radio.Iface, ctrl: rp.CtrlPath(), conf: conf,
		pid: filepath.Join(s.path(RunDir), "hostapd-"+rp.Radio.Iface+".pid"), log: s.log.With("radio", rp.Radio.ID, "iface", rp.Radio.Iface),
		update: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), state: RadioStarting}
}

// reload asks for a restart on the rewritten configuration.
func (p *radioProc) reload() {
	select {
	case p.update <- struct{}{}:
	default:
	}
}

// stop ends the supervisor (and hostapd); wait waits for it.
func (p *radioProc) stop() { p.once.Do(func() { close(p.quit) }) }
func (p *radioProc) wait() { <-p.done }

func (p *radioProc) set(f func(p *radioProc)) {
	p.mu.Lock()
	f(p)
	p.mu.Unlock()
}

// fill copies the radio's state into its status.
func (p *radioProc) fill(rs *RadioStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs.State, rs.HostapdPID, rs.Restarts, rs.LastError = p.state, p.pidNum, p.restarts, p.lastErr
	if p.stOK && p.state != RadioRestarting && p.state != RadioFailed && p.state != RadioStopped {
		rs.State = p.st.State
		if spec, err := p.st.Spec(); err == nil {
			rs.Channel, rs.Freq = spec.String(), spec.Freq
		}
		if len(p.st.BSS) > 0 {
			rs.SSID, rs.Stations = p.st.BSS[0].SSID, p.st.BSS[0].NumSTA
			if len(p.st.BSS[0].BSSID) == 6 {
				rs.BSSID = p.st.BSS[0].BSSID.String()
			}
		}
	}
}

// ready reports whether hostapd serves (STATUS says ENABLED).
func (p *radioProc) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.enabled
}

func (p *radioProc) run(ctx context.Context) {
	defer close(p.done)
	t := p.s.tune
	backoff := t.RestartMin
	first := true
	out := &lineLogger{log: p.log}
	for {
		if !first {
			p.s.rerender(p.id)
		}
		killStale(p.s.Root, p.pid, p.conf, p.log)
		proc, err := p.s.Runner.Start(ctx, p.conf, p.pid, out)
		if err != nil {
			p.log.Error("radio: hostapd did not start", "err", err, "retry_in", backoff.String())
			p.set(func(p *radioProc) { p.state, p.lastErr, p.pidNum = RadioFailed, err.Error(), 0 })
			if !p.sleep(ctx, backoff) {
				p.set(func(p *radioProc) { p.state = RadioStopped })
				return
			}
			backoff = min(2*backoff, t.RestartMax)
			continue
		}
		started := time.Now()
		p.set(func(p *radioProc) { p.state, p.pidNum, p.stOK, p.enabled = RadioStarting, proc.PID(), false, false })
		p.log.Info("radio: hostapd started", "pid", proc.PID())
		restarted := !first
		first = false
		why, perr := p.serve(ctx, proc, restarted)
		switch why {
		case endQuit:
			p.log.Info("radio: stopping hostapd", "pid", proc.PID())
			if err := proc.Stop(); err != nil {
				p.log.Warn("radio: hostapd stop", "err", err)
			}
			p.closeClient()
			p.set(func(p *radioProc) { p.state, p.pidNum, p.stOK, p.enabled = RadioStopped, 0, false, false })
			return
		case endUpdate:
			p.log.Info("radio: restarting hostapd for the new configuration", "pid", proc.PID())
			_ = proc.Stop()
			p.closeClient()
			backoff = t.RestartMin
			continue
		}
		// hostapd ended on its own.
		p.closeClient()
		msg := "exited"
		if perr != nil {
			msg = perr.Error()
		}
		if time.Since(started) >= t.StableAfter {
			backoff = t.RestartMin
		}
		p.log.Warn("radio: hostapd ended; restarting", "pid", proc.PID(), "err", msg, "ran", time.Since(started).Round(time.Millisecond).String(), "retry_in", backoff.String())
		p.set(func(p *radioProc) {
			p.state, p.lastErr, p.pidNum, p.stOK, p.enabled = RadioRestarting, "hostapd "+msg, 0, false, false
			p.restarts++
		})
		if !p.sleep(ctx, backoff) {
			p.set(func(p *radioProc) { p.state = RadioStopped })
			return
		}
		backoff = min(2*backoff, t.RestartMax)
	}
}

type endReason int

const (
	endExit endReason = iota
	endQuit
	endUpdate
)

// serve connects to the running hostapd and reads its STATUS every Poll until it ends or the
// supervisor is told to stop or restart.
func (p *radioProc) serve(ctx context.Context, proc Process, restarted bool) (endReason, error) {
	tick := time.NewTicker(p.s.tune.Poll)
	defer tick.Stop()
	dialTry := time.NewTimer(100 * time.Millisecond)
	defer dialTry.Stop()
	dialDeadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-ctx.Done():
			return endQuit, nil
		case <-p.quit:
			return endQuit, nil
		case <-p.update:
			return endUpdate, nil
		case <-proc.Done():
			return endExit, proc.Err()
		case <-dialTry.C:
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := hostapd.Dial(dctx, p.ctrl, hostapd.Options{Logger: p.log})
			cancel()
			if err != nil {
				if time.Now().After(dialDeadline) {
					p.log.Warn("radio: hostapd's control socket does not answer", "ctrl", p.ctrl, "err", err)
					p.set(func(p *radioProc) { p.lastErr = "control socket: " + err.Error() })
					dialDeadline = time.Now().Add(time.Minute)
				}
				dialTry.Reset(250 * time.Millisecond)
				continue
			}
			p.set(func(p *radioProc) { p.client = c })
			if restarted {
				p.s.reattach(p.iface)
			}
			p.poll(ctx)
		case <-tick.C:
			p.poll(ctx)
		}
	}
}

// poll reads STATUS and remembers the channel hostapd serves on.
func (p *radioProc) poll(ctx context.Context) {
	p.mu.Lock()
	c := p.client
	p.mu.Unlock()
	if c == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	st, err := c.Status(sctx)
	cancel()
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			p.log.Debug("radio: STATUS", "err", err)
		}
		return
	}
	var wasEnabled bool
	p.set(func(p *radioProc) {
		wasEnabled = p.enabled
		p.st, p.stOK, p.enabled = st, true, st.State == "ENABLED"
		if p.enabled {
			p.state = st.State
		}
	})
	if st.State == "ENABLED" {
		if !wasEnabled {
			spec, _ := st.Spec()
			p.log.Info("radio: serving", "state", st.State, "channel", spec.String())
		}
		if spec, err := st.Spec(); err == nil {
			p.s.remember(p.id, spec)
		}
	}
}

func (p *radioProc) closeClient() {
	p.mu.Lock()
	c := p.client
	p.client = nil
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// sleep waits d unless stopped (false) or given a new configuration (true, at once).
func (p *radioProc) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-p.quit:
		return false
	case <-p.update:
		return true
	case <-t.C:
		return true
	}
}
