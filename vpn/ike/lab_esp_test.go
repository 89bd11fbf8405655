package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/vpn/esp"
)

// TestLabESPPing proves CHILD SA key agreement on the wire: with the keys this package
// negotiated, an ICMP echo sealed by vpn/esp reaches strongSwan's libipsec, which decrypts it,
// hands it to its kernel, and encrypts the kernel's echo reply back to us; we open it with our
// inbound keys. Done for each suite, after establishment and after CHILD rekeys by either side
// (PFS), over UDP encapsulation on port 4500.
func TestLabESPPing(t *testing.T) {
	for _, s := range suites {
		t.Run(s.esp, func(t *testing.T) {
			t.Parallel()
			r := newLabRig(t, rigOpts{
				sw:    lab.Conn{Proposals: []string{s.ike}, Children: []lab.Child{{Name: "tun1", ESPProposals: []string{s.esp}}}},
				swCfg: lab.CharonConfig{TunAddrs: []string{"169.254.10.1/30"}},
				ours:  withSuite(s.ike, s.esp),
			})
			replies := make(chan []byte, 16)
			r.tr.OnESP(func(b []byte, local, remote netip.AddrPort) {
				replies <- append([]byte(nil), b...)
			})
			r.waitConverged(15 * time.Second)
			ping := func(what string, seq uint16) {
				t.Helper()
				out := r.dp.outbound()
				in := r.dp.inbound(out.SPIIn)
				osa, err := esp.NewSA(espParams(out.SPIOut, out, out.EncKeyOut, out.IntegKeyOut))
				if err != nil {
					t.Fatal(err)
				}
				isa, err := esp.NewSA(espParams(in.SPIIn, in, in.EncKeyIn, in.IntegKeyIn))
				if err != nil {
					t.Fatal(err)
				}
				echo := icmpEcho(netip.MustParseAddr("169.254.10.2"), netip.MustParseAddr("169.254.10.1"), 0x4d52, seq)
				for attempt := 0; ; attempt++ {
					pkt, err := osa.Seal(nil, echo, 4) // next header 4: IPv4
					if err != nil {
						t.Fatal(err)
					}
					if err := r.tr.Send(pkt, out.Local, out.Remote); err != nil {
						t.Fatal(err)
					}
					deadline := time.After(time.Second)
				wait:
					for {
						select {
						case b := <-replies:
							inner, nh, err := isa.Open(nil, b)
							if err != nil {
								if b[0] == byte(in.SPIIn>>24) && b[1] == byte(in.SPIIn>>16) {
									t.Fatalf("%s: opening strongSwan's ESP with our inbound keys: %v", what, err)
								}
								continue // an SA of before the rekey
							}
							if nh != 4 || len(inner) < 28 || inner[9] != 1 || inner[20] != 0 || binary.BigEndian.Uint16(inner[26:28]) != seq {
								continue // e.g. IPv6 router solicitations from strongSwan's ipsec0: also decrypted fine
							}
							t.Logf("%s: echo reply on SPI %08x (ours out %08x)", what, in.SPIIn, out.SPIOut)
							return
						case <-deadline:
							break wait
						}
					}
					if attempt == 2 {
						t.Fatalf("%s: no ESP echo reply from strongSwan (SPI out %08x)", what, out.SPIOut)
					}
				}
			}
			ping("after establishment", 1)
			for i, step := range []func() error{
				func() error { return r.sw.RekeyChild(r.ctx(5*time.Second), "tun1") },
				r.conn.RekeyChild,
			} {
				before := r.dp.outbound().SPIOut
				if err := step(); err != nil {
					t.Fatal(err)
				}
				r.waitFor(10*time.Second, "rekey", func() bool { o := r.dp.outbound(); return o != nil && o.SPIOut != before })
				r.waitConverged(10 * time.Second)
				ping(fmt.Sprintf("after rekey %d", i+1), uint16(2+i))
			}
		})
	}
}

func espParams(spi uint32, sa *ChildSA, ek, ik []byte) esp.Params {
	return esp.Params{SPI: spi, Suite: esp.Suite{Encr: sa.EncrID, KeyBits: sa.EncrKeyBits, Integ: sa.IntegID},
		EncrKey: ek, IntegKey: ik, ReplayWindow: int(sa.ReplayWindow)}
}

// icmpEcho builds an IPv4 ICMP echo request.
func icmpEcho(src, dst netip.Addr, id, seq uint16) []byte {
	p := make([]byte, 20+8+16)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 1
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], csum(p[:20]))
	icmp := p[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], "meshroot-ike-test")
	binary.BigEndian.PutUint16(icmp[2:], csum(icmp))
	return p
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
