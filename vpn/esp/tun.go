package esp

import (
	"fmt"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// TUN is the part of a TUN device the data plane uses: batched reads and writes of IP packets
// at an offset into each buffer. golang.zx2c4.com/wireguard/tun's Device satisfies it (with
// virtio-net offloads: a TCP super-packet read from the kernel comes back split into MTU-sized
// segments, and Write coalesces TCP segments back into super-packets, which needs the
// buffers' spare capacity and at least TUNWriteOffset bytes of headroom). FakeTUN is the fake.
type TUN interface {
	// Read reads one or more packets into bufs[i][offset:], setting sizes[i], and returns
	// how many.
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// Write writes bufs[i][offset:] as packets. It may reorder and extend the slices in bufs
	// (GRO), so the caller rebuilds bufs for every call.
	Write(bufs [][]byte, offset int) (int, error)
	// BatchSize is the most packets one Read returns.
	BatchSize() int
	// MTU is the device's MTU.
	MTU() (int, error)
	// Close releases the device and unblocks Read.
	Close() error
}

// TUNWriteOffset is the headroom Write needs before each packet (wireguard-go writes its
// virtio-net header there).
const TUNWriteOffset = 16

// CreateTUN creates (or attaches to) the TUN device name with the given MTU in the calling
// thread's network namespace, with virtio-net offloads when the kernel offers them. The tunnel
// layer adds addresses and brings the link up.
func CreateTUN(name string, mtu int) (TUN, error) {
	if len(name) > 15 {
		return nil, fmt.Errorf("esp: tun name %q longer than 15 bytes", name)
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("esp: create tun %q: %w", name, err)
	}
	// MTU() asks the kernel through a socket of the calling thread's namespace: read it now,
	// while that is the device's namespace (the data plane runs on other threads).
	got, err := dev.MTU()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("esp: tun %q: %w", name, err)
	}
	if err := setTxQueueLen(name, TUNTxQueueLen); err != nil {
		dev.Close()
		return nil, fmt.Errorf("esp: tun %q: txqueuelen: %w", name, err)
	}
	r, err := newTUNReader(dev.File())
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("esp: tun %q: %w", name, err)
	}
	t := &nativeTUN{Device: dev, mtu: got, r: r}
	// The device reports link events on a small channel and blocks when it is full: drain it
	// (until Close closes it).
	go func() {
		for range dev.Events() {
		}
	}()
	return t, nil
}

// nativeTUN is a wireguard-go TUN device with its MTU read at creation.
type nativeTUN struct {
	wgtun.Device
	mtu int
	r   *tunReader
}

// Read drains the device in batches (tunReader); writes go through wireguard-go, whose GRO
// coalesces TCP and UDP segments into super-packets.
func (t *nativeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.r.Read(bufs, sizes, offset)
}

// MTU is the device's MTU when it was created (the tunnel layer owns it and does not change it
// behind the data plane's back).
func (t *nativeTUN) MTU() (int, error) { return t.mtu, nil }
