package hostapd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The files in testdata/hostapd-2.10 are what Debian's hostapd 2.10 sent radiotest in the QEMU
// test (TestVMRadio with MESHROOT_RADIO_FIXTURES): a VHT80 AP on mac80211_hwsim with one
// station, a CSA to 149/80, a DFS CAC on 52/80 and a simulated radar.

func readFixture(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "hostapd-2.10", name))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestRealHostapdStatus(t *testing.T) {
	st, err := ParseStatus(readFixture(t, "status.txt"))
	if err != nil {
		t.Fatalf("ParseStatus(hostapd 2.10) = %v", err)
	}
	s, err := st.Spec()
	if err != nil || s.String() != "36/80" || s.Center1 != 5210 || st.State != "ENABLED" || st.MaxTxPower != 23 ||
		len(st.BSS) != 1 || st.BSS[0].SSID != "meshroot-vm" || st.BSS[0].BSSID.String() != "02:00:00:00:00:00" || st.CACLeft != -1 {
		t.Errorf("ParseStatus(hostapd 2.10) = %+v, spec %v, %v", st, s, err)
	}
}

func TestRealHostapdStation(t *testing.T) {
	sta, ok, err := ParseStation(readFixture(t, "sta.txt"))
	if err != nil || !ok {
		t.Fatalf("ParseStation(hostapd 2.10) = %v, %v", ok, err)
	}
	if sta.Addr.String() != "02:00:00:00:01:00" || sta.Signal != -27 || !sta.HasFlag("VHT") || sta.AID != 1 || sta.RxBytes != 255 || len(sta.ExtCapabilities) != 8 {
		t.Errorf("ParseStation(hostapd 2.10) = %+v", sta)
	}
}

func TestRealHostapdEvents(t *testing.T) {
	names := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(readFixture(t, "events.txt")), "\n") {
		ev, err := ParseEvent(line)
		if err != nil {
			t.Errorf("ParseEvent(%q) = %v", line, err)
			continue
		}
		names[ev.Name]++
		switch ev.Name {
		case EventChannelSwitchStarted, EventChannelSwitch, EventCSAFinished:
			cs, ok := ev.ChannelSwitch()
			if !ok || (cs.Freq != 5745 && cs.Freq != 5180) || (ev.Name != EventCSAFinished && cs.Width != 80) {
				t.Errorf("ChannelSwitch(%q) = %+v, %v", line, cs, ok)
			}
		case EventRadarDetected, EventCACStart, EventCACCompleted, EventDFSNewChannel:
			d, ok := ev.DFS()
			if !ok || (d.Freq != 5260 && ev.Name != EventDFSNewChannel) {
				t.Errorf("DFS(%q) = %+v, %v", line, d, ok)
			}
			if ev.Name == EventCACStart && d.CACTime.Seconds() != 60 {
				t.Errorf("CAC time of %q = %v; want 60s", line, d.CACTime)
			}
			if ev.Name == EventRadarDetected && (d.Width != 80 || d.CF1 != 5290) {
				t.Errorf("radar %q = %+v; want 80 MHz around 5290", line, d)
			}
		case EventSTAConnected, EventSTADisconnected:
			if ev.Addr.String() != "02:00:00:00:01:00" {
				t.Errorf("station event %q addr %v", line, ev.Addr)
			}
		}
	}
	for _, want := range []string{EventSTAConnected, EventChannelSwitchStarted, EventCSAFinished, EventCACStart, EventCACCompleted, EventRadarDetected} {
		if names[want] == 0 {
			t.Errorf("fixture has no %s", want)
		}
	}
}
