package medium

import (
	"errors"
	"sync"
)

// Delivery is a frame FakeKernel was asked to hand to a radio.
type Delivery struct {
	Rx     Addr
	Frame  []byte
	Freq   int
	Signal int
	Rate   int
}

// TxStatus is a transmission outcome FakeKernel received.
type TxStatus struct {
	Tx     Addr
	Cookie uint64
	Flags  uint32
	Signal int
	Rates  [maxRates]TxRate
}

// Acked reports the HWSIM_TX_STAT_ACK flag.
func (s TxStatus) Acked() bool { return s.Flags&flagStatAck != 0 }

// FakeKernel stands in for mac80211_hwsim in unit tests: a fixed list of radios, frames
// injected with Transmit, and every delivery and transmit status recorded.
type FakeKernel struct {
	radios []RadioInfo
	in     chan Event
	done   chan struct{}
	once   sync.Once

	mu         sync.Mutex
	registered bool
	deliveries []Delivery
	statuses   []TxStatus
	notify     chan struct{}
}

// NewFakeKernel returns a kernel with radios phy0..phy<n-1>.
func NewFakeKernel(n int) *FakeKernel {
	k := &FakeKernel{in: make(chan Event, 256), done: make(chan struct{}), notify: make(chan struct{}, 1)}
	for i := 0; i < n; i++ {
		k.radios = append(k.radios, RadioInfo{ID: i, Name: "phy" + itoa(i)})
	}
	return k
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// Register implements Kernel.
func (k *FakeKernel) Register() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.registered {
		return errors.New("EBUSY")
	}
	k.registered = true
	return nil
}

// Radios implements Kernel.
func (k *FakeKernel) Radios() ([]RadioInfo, error) { return append([]RadioInfo(nil), k.radios...), nil }

// Receive implements Kernel.
func (k *FakeKernel) Receive() (Event, error) {
	select {
	case ev := <-k.in:
		return ev, nil
	case <-k.done:
		return Event{}, errors.New("fake kernel closed")
	}
}

// Inject queues an event for the medium.
func (k *FakeKernel) Inject(ev Event) { k.in <- ev }

// Transmit queues a frame as if radio idx had sent it.
func (k *FakeKernel) Transmit(idx int, frame []byte, freq int, cookie uint64, noAck bool) {
	_, id := RadioAddrs(idx)
	f := TxFrame{Transmitter: id, Frame: frame, Freq: freq, Cookie: cookie, Flags: flagReqTxStatus}
	if noAck {
		f.Flags |= flagNoAck
	}
	f.Rates = [maxRates]TxRate{{Idx: 0, Count: 3}, {Idx: -1}, {Idx: -1}, {Idx: -1}}
	k.Inject(Event{Frame: &f})
}

// Deliver implements Kernel.
func (k *FakeKernel) Deliver(rx Addr, frame []byte, freq, signal, rate int) error {
	k.mu.Lock()
	k.deliveries = append(k.deliveries, Delivery{Rx: rx, Frame: append([]byte(nil), frame...), Freq: freq, Signal: signal, Rate: rate})
	k.mu.Unlock()
	return nil
}

// TxInfo implements Kernel.
func (k *FakeKernel) TxInfo(tx Addr, cookie uint64, flags uint32, signal int, rates [maxRates]TxRate) error {
	k.mu.Lock()
	k.statuses = append(k.statuses, TxStatus{Tx: tx, Cookie: cookie, Flags: flags, Signal: signal, Rates: rates})
	k.mu.Unlock()
	select {
	case k.notify <- struct{}{}:
	default:
	}
	return nil
}

// Close implements Kernel.
func (k *FakeKernel) Close() error {
	k.once.Do(func() { close(k.done) })
	return nil
}

// Statuses returns the transmit statuses so far; Deliveries the deliveries.
func (k *FakeKernel) Statuses() []TxStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]TxStatus(nil), k.statuses...)
}

// Deliveries returns the deliveries so far.
func (k *FakeKernel) Deliveries() []Delivery {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Delivery(nil), k.deliveries...)
}

// Notify is signalled after each transmit status.
func (k *FakeKernel) Notify() <-chan struct{} { return k.notify }
