package tunnel

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"sync"
	"time"

	"meshroot/vpn/esp"
	"meshroot/vpn/ike"
)

// dataPlane joins an ike.Conn to an esp.Tunnel: it turns negotiated CHILD SAs (IANA IDs and
// keys) into esp.Params, in the order IKE calls it (make-before-break), reserves inbound SPIs
// on the shared socket so that two tunnels never collide, and reports per-SA inbound activity
// for IKE's DPD. The mapping is the one vpn/esp documents: EncrID → Encr, EncrKeyBits →
// KeyBits, IntegID → Integ, EncKeyIn/Out → EncrKey, IntegKeyIn/Out → IntegKey, ReplayWindow.
type dataPlane struct {
	t   *esp.Tunnel
	mux *esp.Mux
	log *slog.Logger

	mu       sync.Mutex
	reserved map[uint32]time.Time // SPIs reserved for negotiations, not installed yet
}

var (
	_ ike.DataPlane        = (*dataPlane)(nil)
	_ ike.ActivityReporter = (*dataPlane)(nil)
)

func newDataPlane(t *esp.Tunnel, mux *esp.Mux, log *slog.Logger) *dataPlane {
	return &dataPlane{t: t, mux: mux, log: log, reserved: map[uint32]time.Time{}}
}

func espParams(spi uint32, sa *ike.ChildSA, encr, integ []byte) esp.Params {
	return esp.Params{
		SPI:          spi,
		Suite:        esp.Suite{Encr: sa.EncrID, KeyBits: sa.EncrKeyBits, Integ: sa.IntegID},
		EncrKey:      encr,
		IntegKey:     integ,
		ReplayWindow: int(sa.ReplayWindow),
	}
}

// remote follows the peer's NAT-T address (a NAT mapping that changed).
func (d *dataPlane) remote(sa *ike.ChildSA) {
	if sa.Remote.IsValid() && sa.Remote.Port() != 0 && sa.Remote != d.t.Remote() {
		d.t.SetRemote(sa.Remote)
	}
}

// AddInbound implements ike.DataPlane.
func (d *dataPlane) AddInbound(sa *ike.ChildSA) error {
	d.mu.Lock()
	delete(d.reserved, sa.SPIIn)
	d.mu.Unlock()
	d.remote(sa)
	_, err := d.t.AddInbound(espParams(sa.SPIIn, sa, sa.EncKeyIn, sa.IntegKeyIn))
	if err != nil {
		d.log.Warn("installing inbound SA failed", "sa", sa, "err", err)
	}
	return err
}

// SetOutbound implements ike.DataPlane.
func (d *dataPlane) SetOutbound(sa *ike.ChildSA) error {
	d.remote(sa)
	_, err := d.t.SetOutbound(espParams(sa.SPIOut, sa, sa.EncKeyOut, sa.IntegKeyOut))
	if err != nil {
		d.log.Warn("installing outbound SA failed", "sa", sa, "err", err)
	}
	return err
}

// DelInbound implements ike.DataPlane.
func (d *dataPlane) DelInbound(spiIn uint32) {
	d.mu.Lock()
	_, reserved := d.reserved[spiIn]
	delete(d.reserved, spiIn)
	d.mu.Unlock()
	if reserved {
		d.mux.ReleaseSPI(spiIn)
		return
	}
	if err := d.t.RemoveInbound(spiIn); err != nil {
		d.log.Debug("removing inbound SA", "spi", spiIn, "err", err)
	}
}

// DelOutbound implements ike.DataPlane.
func (d *dataPlane) DelOutbound(spiOut uint32) {
	if out := d.t.Outbound(); out != nil && out.SPI() == spiOut {
		d.t.ClearOutbound()
	}
}

// LastInbound implements ike.ActivityReporter.
func (d *dataPlane) LastInbound(spiIn uint32) time.Time { return d.t.LastInboundOn(spiIn) }

// allocSPI reserves an inbound SPI on the shared socket (ike.Options.AllocSPI). When that
// fails (the socket is closing) a random unreserved SPI is returned: IKE calls this with its
// lock held and must not spin.
func (d *dataPlane) allocSPI() uint32 {
	spi, err := d.mux.ReserveSPI()
	if err != nil {
		d.log.Warn("reserving an SPI failed", "err", err)
		var b [4]byte
		_, _ = rand.Read(b[:])
		return binary.BigEndian.Uint32(b[:]) | 0x100
	}
	d.mu.Lock()
	d.reserved[spi] = time.Now()
	d.mu.Unlock()
	return spi
}

// releaseStale frees reservations of negotiations that never completed (IKE does not report
// those), older than age.
func (d *dataPlane) releaseStale(age time.Duration) {
	d.mu.Lock()
	var stale []uint32
	for spi, at := range d.reserved {
		if time.Since(at) > age {
			stale = append(stale, spi)
			delete(d.reserved, spi)
		}
	}
	d.mu.Unlock()
	for _, spi := range stale {
		d.mux.ReleaseSPI(spi)
	}
}
