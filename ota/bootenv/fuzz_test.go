package bootenv

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecode feeds arbitrary bytes to the environment parser (both layouts, valid CRC forced
// half of the time) and checks that whatever parses re-encodes to the same variables.
func FuzzDecode(f *testing.F) {
	seed := mustSeed(map[string]string{"boot_slot": "a", "bootcount": "0", "altbootcmd": "setenv boot_slot b"})
	f.Add(seed, true, true)
	f.Add(seed, false, false)
	f.Add([]byte("a=1\x00.flags=a:xr,b\x00\x00"), false, true)
	f.Add([]byte("\xff\xff\xff\xff\xff"), true, false)
	f.Add([]byte("no-terminator"), false, true)
	f.Fuzz(func(t *testing.T, data []byte, redundant, fixCRC bool) {
		img := data
		if fixCRC {
			// Build an image whose CRC matches whatever data follows the header.
			off := 4
			if redundant {
				off = 5
			}
			img = make([]byte, off+len(data))
			copy(img[off:], data)
			binary.LittleEndian.PutUint32(img, crc32.ChecksumIEEE(img[off:]))
		}
		env, _, ok, err := Decode(img, redundant)
		if err != nil || !ok {
			return
		}
		for _, k := range env.Names() {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				t.Fatalf("Decode produced an unstorable name %q", k)
			}
		}
		re, err := Encode(env, len(img)+256, redundant, 1)
		if err != nil {
			return // .flags regeneration can need more room than the input had
		}
		back, _, ok, err := Decode(re, redundant)
		if err != nil || !ok {
			t.Fatalf("Decode(Encode(env)) = ok %v, %v", ok, err)
		}
		if diff := cmp.Diff(env.Map(), back.Map()); diff != "" {
			t.Fatalf("Decode(Encode(env)) mismatch (-want +got):\n%s", diff)
		}
	})
}

// FuzzParseConfig checks that fw_env.config parsing never panics and that what it accepts
// survives a String round trip.
func FuzzParseConfig(f *testing.F) {
	f.Add("/dev/vda 0x80000 0x20000 0x20000\n/dev/vda 0xA0000 0x20000 0x20000\n")
	f.Add("# c\n/dev/mtd3 0 10000\n")
	f.Add("/x 010 ff\n")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseConfig(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, l := range cfg {
			if strings.ContainsAny(l.Device, " \t\n") || l.Size <= 0 || l.Offset < 0 || l.SectorSize < 0 {
				return // not representable in the text form; nothing to round-trip
			}
		}
		back, err := ParseConfig(strings.NewReader(cfg.String()))
		if err != nil {
			t.Fatalf("ParseConfig(String()) = %v for %q", err, cfg.String())
		}
		if len(back) != len(cfg) {
			t.Fatalf("ParseConfig(String()) = %d lines; want %d", len(back), len(cfg))
		}
	})
}

func mustSeed(m map[string]string) []byte {
	e, err := FromMap(m)
	if err != nil {
		panic(err)
	}
	img, err := Encode(e, 256, true, 1)
	if err != nil {
		panic(err)
	}
	return img[5:]
}
