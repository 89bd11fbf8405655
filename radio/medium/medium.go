// Package medium is a simulated wireless medium for the kernel's mac80211_hwsim radios, written
// in Go: it does the job of wmediumd (which Debian 12 does not package). It registers with
// hwsim's generic netlink family as the medium of its network namespace (HWSIM_CMD_REGISTER);
// from then on the kernel hands it every frame any radio of that namespace's radio group
// transmits (HWSIM_CMD_FRAME with the transmitter's identity, the frame, the channel, the rate
// table and a cookie), and delivers nothing by itself. The medium decides, per receiving radio,
// whether and how strongly the frame arrives — from a Model, by default a Space of positions
// (radios may walk), log-distance path loss and walls — and passes it on with that signal
// (HWSIM_CMD_FRAME to the receiver with HWSIM_ATTR_SIGNAL), then tells the sender whether it
// was acknowledged and how many attempts it took (HWSIM_CMD_TX_INFO_FRAME). So hostapd, the
// stations' supplicants and the kernel's mesh see a different signal on every link, which
// mac80211_hwsim alone cannot do (every link gets -50 dBm plus the transmit power).
//
// What the kernel does (mac80211_hwsim.c, Linux 6.1), and therefore what this package relies on:
//   - Radios are addressed on the netlink interface by their second permanent address, the
//     first with 0x40 set (42:00:00:00:NN:00 for radio NN): HWSIM_ATTR_ADDR_TRANSMITTER on
//     frames from the kernel and on TX_INFO, HWSIM_ATTR_ADDR_RECEIVER on deliveries. Virtual
//     interfaces may use other MAC addresses; the kernel announces them
//     (HWSIM_CMD_ADD_MAC_ADDR), and the medium also learns them from transmitted frames, to
//     know which radio a unicast frame is for (and whether it is acknowledged).
//   - Registration can happen at any time: radios created before it (mac80211_hwsim radios=N
//     at module load) switch to the medium when it registers; until then, and again when the
//     medium's socket closes, hwsim delivers frames itself. Only one medium per namespace
//     (-EBUSY otherwise), and hwsim refuses it when a radio has more than one channel.
//   - The kernel drops a delivery to a radio that is not on the frame's channel (nor scanning
//     it) and answers it with an error, which the medium ignores; it also refuses RX rate
//     indexes beyond the band's legacy rates, so deliveries carry a legacy (OFDM) rate index
//     chosen from the link's SNR.
//   - A transmitted frame waits in the sender's pending queue until its TX_INFO arrives; every
//     frame gets exactly one.
//   - Radios keep the network group of the namespace they were created in, even when their
//     PHY is moved to another namespace, so one medium in the initial namespace serves radios
//     that tests move into per-node namespaces.
//
// Kernel is the seam: NetlinkKernel is the real one (Linux), FakeKernel the in-package stand-in
// for unit tests.
package medium

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one message from the kernel: exactly one field is set.
type Event struct {
	Frame    *TxFrame
	MAC      *MACUpdate
	NewRadio *RadioInfo
	DelRadio *RadioInfo
}

// Kernel is mac80211_hwsim's netlink interface as the medium uses it.
type Kernel interface {
	// Register makes the caller the medium of its network namespace.
	Register() error
	// Radios lists the radios.
	Radios() ([]RadioInfo, error)
	// Receive blocks for the next event; it returns an error after Close.
	Receive() (Event, error)
	// Deliver hands a frame to a receiving radio. The kernel may hold deliveries until the
	// frame's TxInfo, which the medium calls after the frame's deliveries.
	Deliver(rx Addr, frame []byte, freq, signal, rate int) error
	// TxInfo reports a transmission's outcome to its sender (and sends held deliveries).
	TxInfo(tx Addr, cookie uint64, flags uint32, signal int, rates [maxRates]TxRate) error
	Close() error
}

// FrameEvent describes one frame on the medium, for observers (Config.Tap).
type FrameEvent struct {
	At time.Time
	// Tx is the transmitting radio; Rx the receiving radio of a unicast frame ("" for group
	// frames and unknown receivers).
	Tx, Rx string
	Freq   int
	Info   FrameInfo
	// Signal is the signal at Rx (0 when no Rx); Acked whether the unicast frame was
	// acknowledged; Attempts how many transmissions it took (or were made).
	Signal   float64
	Acked    bool
	Attempts int
	// Took is the medium's own time on the frame: from handing it over from the kernel's
	// socket to the sender's transmit status (deliveries included).
	Took time.Duration
}

// Config configures a medium.
type Config struct {
	// Model gives each link's signal (required).
	Model Model
	// NoiseDBm is the noise floor (default -95). Frames arrive with a probability that grows
	// with the SNR (about 50% at SNR50, default 6 dB; nothing below 0 dB).
	NoiseDBm float64
	SNR50    float64
	// Seed makes the losses reproducible.
	Seed uint64
	// Now is the clock of the model (default time.Now).
	Now func() time.Time
	// Tap, when set, is called for every management frame other than beacons and probes, and
	// for every frame whose transmitter is in TapRadios (to time data flows), in order, from
	// the medium's goroutine: keep it short.
	Tap       func(FrameEvent)
	TapRadios []string
	Log       *slog.Logger
}

// Medium is the running medium.
type Medium struct {
	cfg Config
	k   Kernel
	log *slog.Logger
	rng *rand.Rand

	mu     sync.Mutex
	radios map[Addr]*radioState
	owner  map[[6]byte]Addr // virtual interface address → radio
	tapTx  map[string]bool

	// Counters.
	Frames, Delivered, Lost, Acked, Unknown atomic.Uint64
	// HandleNanos sums, and MaxHandleNanos is the largest of, the medium's time per frame
	// (FrameEvent.Took).
	HandleNanos, MaxHandleNanos atomic.Uint64
}

type radioState struct {
	id   Addr
	name string
	freq int // the channel it last transmitted on
}

// New returns a medium on k (not yet registered: Run does it).
func New(k Kernel, cfg Config) (*Medium, error) {
	if cfg.Model == nil {
		return nil, errors.New("medium: model: nil")
	}
	if cfg.NoiseDBm == 0 {
		cfg.NoiseDBm = -95
	}
	if cfg.SNR50 == 0 {
		cfg.SNR50 = 6
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	m := &Medium{cfg: cfg, k: k, log: cfg.Log.With("svc", "medium"), rng: rand.New(rand.NewPCG(cfg.Seed, 0x6d656469)),
		radios: map[Addr]*radioState{}, owner: map[[6]byte]Addr{}, tapTx: map[string]bool{}}
	for _, r := range cfg.TapRadios {
		m.tapTx[r] = true
	}
	return m, nil
}

// Radios returns the known radios' names by netlink identity.
func (m *Medium) Radios() map[Addr]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[Addr]string{}
	for a, r := range m.radios {
		out[a] = r.name
	}
	return out
}

func (m *Medium) refreshRadios() error {
	list, err := m.k.Radios()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ri := range list {
		m.addRadioLocked(ri)
	}
	return nil
}

func (m *Medium) addRadioLocked(ri RadioInfo) {
	perm, id := RadioAddrs(ri.ID)
	name := ri.Name
	if name == "" {
		name = id.String()
	}
	if r, ok := m.radios[id]; ok {
		r.name = name
		return
	}
	m.radios[id] = &radioState{id: id, name: name}
	m.owner[perm] = id
}

// Run registers the medium and serves frames until ctx ends or the kernel fails. ready, when
// not nil, is called once registered.
func (m *Medium) Run(ctx context.Context, ready func()) error {
	if err := m.refreshRadios(); err != nil {
		return fmt.Errorf("medium: radios: %w", err)
	}
	if err := m.k.Register(); err != nil {
		return fmt.Errorf("medium: register with mac80211_hwsim: %w", err)
	}
	m.log.Info("medium registered", "radios", len(m.Radios()))
	if ready != nil {
		ready()
	}
	stop := context.AfterFunc(ctx, func() { m.k.Close() })
	defer stop()
	for {
		ev, err := m.k.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("medium: receive: %w", err)
		}
		switch {
		case ev.Frame != nil:
			m.handle(*ev.Frame)
		case ev.MAC != nil:
			m.mu.Lock()
			if ev.MAC.Add {
				m.owner[ev.MAC.Addr] = ev.MAC.Radio
			} else if m.owner[ev.MAC.Addr] == ev.MAC.Radio {
				delete(m.owner, ev.MAC.Addr)
			}
			m.mu.Unlock()
		case ev.NewRadio != nil:
			m.mu.Lock()
			m.addRadioLocked(*ev.NewRadio)
			m.mu.Unlock()
		case ev.DelRadio != nil:
			_, id := RadioAddrs(ev.DelRadio.ID)
			m.mu.Lock()
			delete(m.radios, id)
			m.mu.Unlock()
		}
	}
}

// receiveProb is the chance one transmission arrives at snr dB.
func (m *Medium) receiveProb(snr float64) float64 {
	if snr < 0 {
		return 0
	}
	return 1 / (1 + math.Exp(-(snr-m.cfg.SNR50)/1.5))
}

// legacyRate picks the OFDM rate index (0 = 6 Mbit/s … 7 = 54 Mbit/s) a link of snr dB
// sustains; on 2.4 GHz the OFDM rates follow the four DSSS/CCK ones.
func legacyRate(snr float64, freq int) int {
	thresholds := []float64{5, 8, 9, 11, 15, 18, 20, 21}
	idx := 0
	for i, t := range thresholds {
		if snr >= t {
			idx = i
		}
	}
	if freq > 0 && freq < 3000 {
		idx += 4
	}
	return idx
}

func (m *Medium) handle(f TxFrame) {
	began := time.Now()
	m.Frames.Add(1)
	now := m.cfg.Now()
	info, perr := ParseFrame(f.Frame)
	m.mu.Lock()
	tx := m.radios[f.Transmitter]
	if tx == nil {
		m.mu.Unlock()
		if err := m.refreshRadios(); err != nil {
			m.log.Debug("radio list", "err", err)
		}
		m.mu.Lock()
		tx = m.radios[f.Transmitter]
	}
	if tx == nil {
		m.mu.Unlock()
		m.Unknown.Add(1)
		// Still answer, or the frame would sit in the sender's queue.
		_ = m.k.TxInfo(f.Transmitter, f.Cookie, 0, int(m.cfg.NoiseDBm), f.Rates)
		return
	}
	tx.freq = f.Freq
	if perr == nil && info.HasAddr2 && info.Addr2[0]&1 == 0 {
		if _, known := m.owner[info.Addr2]; !known {
			m.owner[info.Addr2] = tx.id
		}
	}
	var target *radioState
	if perr == nil && !info.Group() {
		if id, ok := m.owner[info.Addr1]; ok && id != tx.id {
			target = m.radios[id]
		}
	}
	others := make([]*radioState, 0, len(m.radios))
	for _, r := range m.radios {
		if r != tx {
			others = append(others, r)
		}
	}
	m.mu.Unlock()

	freq := f.Freq
	deliver := func(rx *radioState, sig float64) {
		snr := sig - m.cfg.NoiseDBm
		if err := m.k.Deliver(rx.id, f.Frame, freq, int(math.Round(sig)), legacyRate(snr, freq)); err != nil {
			m.log.Debug("deliver", "to", rx.name, "err", err)
			return
		}
		m.Delivered.Add(1)
	}

	ev := FrameEvent{At: now, Tx: tx.name, Freq: freq, Info: info}
	flags := f.Flags &^ flagStatAck
	ackSignal := m.cfg.NoiseDBm
	rates := f.Rates
	switch {
	case target != nil && !f.NoAck():
		// Unicast: up to the rate table's attempts until one arrives, then the ACK.
		sig := m.cfg.Model.Signal(tx.name, target.name, freq, now)
		p := m.receiveProb(sig - m.cfg.NoiseDBm)
		if target.freq != 0 && target.freq != freq {
			p = 0 // the receiver is elsewhere (scanning, or another channel)
		}
		attempts, ok := 0, false
		for i := range rates {
			if rates[i].Idx < 0 || ok {
				if ok {
					rates[i] = TxRate{Idx: -1}
				}
				continue
			}
			used := uint8(0)
			for range max(int(rates[i].Count), 1) {
				used++
				attempts++
				if m.rng.Float64() < p {
					ok = true
					break
				}
			}
			rates[i].Count = used
		}
		if ok {
			deliver(target, sig)
			flags |= flagStatAck
			ackSignal = m.cfg.Model.Signal(target.name, tx.name, freq, now)
			m.Acked.Add(1)
		} else {
			m.Lost.Add(1)
		}
		ev.Rx, ev.Signal, ev.Acked, ev.Attempts = target.name, sig, ok, attempts
	default:
		// Group-addressed, no-ACK, or for an address nobody claims: one transmission, heard
		// by whoever hears it.
		for _, rx := range others {
			sig := m.cfg.Model.Signal(tx.name, rx.name, freq, now)
			if m.rng.Float64() < m.receiveProb(sig-m.cfg.NoiseDBm) {
				deliver(rx, sig)
			}
		}
		for i := range rates {
			if i == 0 {
				rates[i].Count = 1
			} else {
				rates[i] = TxRate{Idx: -1}
			}
		}
		ev.Attempts = 1
		if !f.NoAck() && perr == nil && !info.Group() {
			m.Lost.Add(1) // nobody to acknowledge it
		}
	}
	if err := m.k.TxInfo(tx.id, f.Cookie, flags, int(math.Round(ackSignal)), rates); err != nil {
		m.log.Debug("tx info", "to", tx.name, "err", err)
	}
	ev.Took = time.Since(began)
	took := uint64(ev.Took.Nanoseconds())
	m.HandleNanos.Add(took)
	for {
		old := m.MaxHandleNanos.Load()
		if took <= old || m.MaxHandleNanos.CompareAndSwap(old, took) {
			break
		}
	}
	if m.cfg.Tap != nil && perr == nil {
		tap := m.tapTx[tx.name]
		if info.Type == TypeMgmt && info.Subtype != SubBeacon && info.Subtype != SubProbeReq && info.Subtype != SubProbeResp {
			tap = true
		}
		if tap {
			m.cfg.Tap(ev)
		}
	}
}
