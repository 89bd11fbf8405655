package meshproto

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	macA  = MAC{0x02, 0, 0, 0, 0x01, 0}
	macB  = MAC{0x02, 0, 0, 0, 0x02, 0}
	macST = MAC{0x02, 0, 0, 0, 0x10, 0}
)

func bss(node string, bssid MAC) BSSInfo {
	return BSSInfo{BSSID: bssid, SSID: "home", Node: node, Band: Band5G, Freq: 5180, Channel: 36, OpClass: 115, PHYType: 9, BSSIDInfo: 0x9f3, MobilityDomain: "a1b2"}
}

// roamingSamples is one valid body per roaming message type.
func roamingSamples() map[Type]Validator {
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	sta := StationMetrics{MAC: macST, BSSID: macA, Signal: -61, SignalAvg: -63, TxKbps: 200000, IdleMs: 20, ConnectedSec: 30,
		Caps: Capabilities{BTM: true, BeaconActive: true, BeaconPassive: true, BeaconTable: true, FT: true, Bands: []string{Band2G4, Band5G}}}
	return map[Type]Validator{
		TypeHello: &Hello{Node: "n1", Controller: true, Link: "eth1", Medium: MediumWired, IntervalMs: 200,
			Backhaul: BackhaulState{PathMbps: 1000}},
		TypeTopology: &Topology{Node: "n1", BSSes: []BSSInfo{bss("n1", macA)},
			Links:    []LinkInfo{{Peer: "n2", Link: "mesh0", Medium: MediumWireless, Mbps: 300, Signal: -60, Up: true, PeerPathMbps: 900}},
			Backhaul: BackhaulState{Parent: "n2", Link: "mesh0", Medium: MediumWireless, PathMbps: 270, Hops: 2}},
		TypeAPMetrics:     &APMetrics{Node: "n1", At: at, BSSes: []BSSMetrics{{BSSID: macA, Utilization: 30, Stations: []StationMetrics{sta}}}},
		TypeClientEvent:   &ClientEvent{Node: "n1", BSSID: macA, MAC: macST, Joined: true, Station: &sta, At: at},
		TypeBeaconQuery:   &BeaconQuery{ID: 4, BSSID: macA, MAC: macST, Mode: BeaconActive, Channels: []ChannelRef{{OpClass: 115, Channel: 36}}, DurationTU: 50, SSID: "home"},
		TypeBeaconMetrics: &BeaconMetrics{Query: 4, Node: "n1", MAC: macST, Report: []BeaconMeasurement{{BSSID: macB, OpClass: 115, Channel: 36, RCPI: 100, RSNI: 40}}},
		TypeSteer: &Steer{ID: 9, BSSID: macA, MAC: macST, Targets: []SteerTarget{{BSS: bss("n2", macB), Preference: 255}},
			DisassocImminent: true, DisassocTimer: 100, ValidityTBTT: 100, Reason: "signal"},
		TypeBTMReport:      &BTMReport{Steer: 9, Node: "n1", MAC: macST, BSSID: macA, Status: 0, Target: macB},
		TypeAssocControl:   &AssocControl{ID: 10, MAC: macST, BSSIDs: []MAC{macA}, Block: true, ValiditySec: 30, Deauth: true, Reason: 5},
		TypeSteerDone:      &SteerDone{Steer: 9, Node: "n1", MAC: macST, OK: true, Detail: "reassociated with 02:00:00:00:02:00"},
		TypeBackhaulSteer:  &BackhaulSteer{ID: 11, Node: "n2", Parent: "n1", Link: "eth1", Medium: MediumWired},
		TypeBackhaulResult: &BackhaulResult{ID: 11, Node: "n2", OK: true, Backhaul: BackhaulState{Parent: "n1", Link: "eth1", Medium: MediumWired, PathMbps: 940, Hops: 1}},
		TypeNeighbors:      &Neighbors{Version: 3, BSSes: []BSSInfo{bss("n1", macA), bss("n2", macB)}},
		TypeAck:            &Ack{Of: TypeSteer, ID: 9},
	}
}

func decodeAny(m Message) (Validator, error) {
	switch m.Type {
	case TypeHello:
		v, err := DecodeValid[Hello](m, m.Type)
		return &v, err
	case TypeTopology:
		v, err := DecodeValid[Topology](m, m.Type)
		return &v, err
	case TypeAPMetrics:
		v, err := DecodeValid[APMetrics](m, m.Type)
		return &v, err
	case TypeClientEvent:
		v, err := DecodeValid[ClientEvent](m, m.Type)
		return &v, err
	case TypeBeaconQuery:
		v, err := DecodeValid[BeaconQuery](m, m.Type)
		return &v, err
	case TypeBeaconMetrics:
		v, err := DecodeValid[BeaconMetrics](m, m.Type)
		return &v, err
	case TypeSteer:
		v, err := DecodeValid[Steer](m, m.Type)
		return &v, err
	case TypeBTMReport:
		v, err := DecodeValid[BTMReport](m, m.Type)
		return &v, err
	case TypeAssocControl:
		v, err := DecodeValid[AssocControl](m, m.Type)
		return &v, err
	case TypeSteerDone:
		v, err := DecodeValid[SteerDone](m, m.Type)
		return &v, err
	case TypeBackhaulSteer:
		v, err := DecodeValid[BackhaulSteer](m, m.Type)
		return &v, err
	case TypeBackhaulResult:
		v, err := DecodeValid[BackhaulResult](m, m.Type)
		return &v, err
	case TypeNeighbors:
		v, err := DecodeValid[Neighbors](m, m.Type)
		return &v, err
	case TypeAck:
		v, err := DecodeValid[Ack](m, m.Type)
		return &v, err
	}
	return nil, errors.New("not a roaming message")
}

func TestRoamingRoundTrip(t *testing.T) {
	s, o := pair(t)
	for typ, body := range roamingSamples() {
		if err := body.Validate(); err != nil {
			t.Errorf("%s: sample Validate() = %v", typ, err)
			continue
		}
		b, err := s.Seal(typ, body)
		if err != nil {
			t.Fatalf("%s: Seal() = %v", typ, err)
		}
		m, err := o.Open(b)
		if err != nil {
			t.Fatalf("%s: Open() = %v", typ, err)
		}
		got, err := decodeAny(m)
		if err != nil {
			t.Errorf("%s: decode = %v", typ, err)
			continue
		}
		if diff := cmp.Diff(body, got); diff != "" {
			t.Errorf("%s: round trip (-sent +got):\n%s", typ, diff)
		}
		if name := typ.String(); strings.HasPrefix(name, "type-") {
			t.Errorf("Type(%d).String() = %q; want a name", typ, name)
		}
	}
}

func TestDecodeValidWrongType(t *testing.T) {
	s, o := pair(t)
	b, _ := s.Seal(TypeHello, Hello{Node: "n1", IntervalMs: 100})
	m, err := o.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeValid[Steer](m, TypeSteer); err == nil {
		t.Errorf("DecodeValid[Steer](hello) = nil error")
	}
}

// TestRoamingInvalid: bodies with one bad field are refused, naming the field.
func TestRoamingInvalid(t *testing.T) {
	tests := []struct {
		name  string
		typ   Type
		json  string
		field string
	}{
		{"hello no node", TypeHello, `{"node":"","interval_ms":100,"backhaul":{"path_mbps":1,"hops":0}}`, "node"},
		{"hello interval", TypeHello, `{"node":"a","interval_ms":0,"backhaul":{"path_mbps":1,"hops":0}}`, "interval_ms"},
		{"hello medium", TypeHello, `{"node":"a","medium":"pigeon","interval_ms":100,"backhaul":{"path_mbps":1,"hops":0}}`, "medium"},
		{"hello nan-ish mbps", TypeHello, `{"node":"a","interval_ms":100,"backhaul":{"path_mbps":-1,"hops":0}}`, "backhaul.path_mbps"},
		{"hello control char", TypeHello, "{\"node\":\"a\\u0007\",\"interval_ms\":100,\"backhaul\":{\"path_mbps\":1,\"hops\":0}}", "node"},
		{"topology foreign bss", TypeTopology, `{"node":"n1","bsses":[{"bssid":"02:00:00:00:01:00","ssid":"x","node":"n2","band":"5GHz","freq":5180,"channel":36,"op_class":115,"phy_type":9,"bssid_info":0}],"backhaul":{"path_mbps":1,"hops":0}}`, "bsses[0].node"},
		{"topology bad band", TypeTopology, `{"node":"n1","bsses":[{"bssid":"02:00:00:00:01:00","ssid":"x","node":"n1","band":"7GHz","freq":5180,"channel":36,"op_class":115,"phy_type":9,"bssid_info":0}],"backhaul":{"path_mbps":1,"hops":0}}`, "bsses[0].band"},
		{"topology mdid", TypeTopology, `{"node":"n1","bsses":[{"bssid":"02:00:00:00:01:00","ssid":"x","node":"n1","band":"5GHz","freq":5180,"channel":36,"op_class":115,"phy_type":9,"bssid_info":0,"mdid":"zz"}],"backhaul":{"path_mbps":1,"hops":0}}`, "bsses[0].mdid"},
		{"metrics signal", TypeAPMetrics, `{"node":"n1","at":"2026-01-01T00:00:00Z","bsses":[{"bssid":"02:00:00:00:01:00","utilization":3,"stations":[{"mac":"02:00:00:00:10:00","bssid":"02:00:00:00:01:00","signal":12,"caps":{}}]}]}`, "bsses[0].stations[0].signal"},
		{"metrics station bssid", TypeAPMetrics, `{"node":"n1","at":"2026-01-01T00:00:00Z","bsses":[{"bssid":"02:00:00:00:01:00","utilization":3,"stations":[{"mac":"02:00:00:00:10:00","bssid":"02:00:00:00:02:00","signal":-50,"caps":{}}]}]}`, "bsses[0].stations[0].bssid"},
		{"metrics utilization", TypeAPMetrics, `{"node":"n1","at":"2026-01-01T00:00:00Z","bsses":[{"bssid":"02:00:00:00:01:00","utilization":300,"stations":[]}]}`, "bsses[0].utilization"},
		{"event no mac", TypeClientEvent, `{"node":"n1","bssid":"02:00:00:00:01:00","mac":"00:00:00:00:00:00","joined":true,"at":"2026-01-01T00:00:00Z"}`, "mac"},
		{"beacon query mode", TypeBeaconQuery, `{"id":1,"bssid":"02:00:00:00:01:00","mac":"02:00:00:00:10:00","mode":"loud"}`, "mode"},
		{"beacon query id", TypeBeaconQuery, `{"id":0,"bssid":"02:00:00:00:01:00","mac":"02:00:00:00:10:00","mode":"table"}`, "id"},
		{"beacon rcpi", TypeBeaconMetrics, `{"query":1,"node":"n1","mac":"02:00:00:00:10:00","report":[{"bssid":"02:00:00:00:01:00","op_class":115,"channel":36,"rcpi":255}]}`, "report[0].rcpi"},
		{"steer no targets", TypeSteer, `{"id":1,"bssid":"02:00:00:00:01:00","mac":"02:00:00:00:10:00","targets":[],"validity":10}`, "targets"},
		{"steer validity", TypeSteer, `{"id":1,"bssid":"02:00:00:00:01:00","mac":"02:00:00:00:10:00","targets":[{"bss":{"bssid":"02:00:00:00:02:00","ssid":"x","node":"n2","band":"5GHz","freq":5180,"channel":36,"op_class":115,"phy_type":9,"bssid_info":0},"pref":255}],"validity":0}`, "validity"},
		{"steer pref", TypeSteer, `{"id":1,"bssid":"02:00:00:00:01:00","mac":"02:00:00:00:10:00","targets":[{"bss":{"bssid":"02:00:00:00:02:00","ssid":"x","node":"n2","band":"5GHz","freq":5180,"channel":36,"op_class":115,"phy_type":9,"bssid_info":0},"pref":0}],"validity":10}`, "targets[0].pref"},
		{"assoc control validity", TypeAssocControl, `{"id":1,"mac":"02:00:00:00:10:00","bssids":["02:00:00:00:01:00"],"block":true,"validity_s":0}`, "validity_s"},
		{"assoc control no bss", TypeAssocControl, `{"id":1,"mac":"02:00:00:00:10:00","bssids":[],"block":false}`, "bssids"},
		{"backhaul steer medium", TypeBackhaulSteer, `{"id":1,"node":"n2","parent":"n1","link":"eth1","medium":"laser"}`, "medium"},
		{"neighbors duplicate", TypeNeighbors, `{"version":1,"bsses":[{"bssid":"02:00:00:00:01:00","ssid":"x","node":"n1","band":"5GHz","freq":5180,"channel":36,"op_class":115,"phy_type":9,"bssid_info":0},{"bssid":"02:00:00:00:01:00","ssid":"x","node":"n1","band":"5GHz","freq":5180,"channel":36,"op_class":115,"phy_type":9,"bssid_info":0}]}`, "bsses[1].bssid"},
		{"ack type", TypeAck, `{"of":1,"id":3}`, "of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Message{Type: tt.typ, Sender: "x", Payload: json.RawMessage(tt.json)}
			_, err := decodeAny(m)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("decode(%s) = %v; want a FieldError", tt.json, err)
			}
			if fe.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Errorf("decode(%s) field = %q (%v); want %q", tt.name, fe.Field, err, tt.field)
			}
		})
	}
}

func TestMACText(t *testing.T) {
	for _, bad := range []string{`"02:00:00:00:01"`, `"02-00-00-00-01-00"`, `"zz:00:00:00:01:00"`, `"02:00:00:00:01:00:00:00"`, `5`} {
		var m MAC
		if err := json.Unmarshal([]byte(bad), &m); err == nil {
			t.Errorf("Unmarshal(%s) = %v, nil error; want an error", bad, m)
		}
	}
	var m MAC
	if err := json.Unmarshal([]byte(`"02:AB:00:00:01:00"`), &m); err != nil || m.String() != "02:ab:00:00:01:00" {
		t.Errorf("Unmarshal(upper case) = %v, %v", m, err)
	}
	if got := (BeaconMeasurement{RCPI: 100}).Signal(); got != -60 {
		t.Errorf("Signal(RCPI 100) = %v; want -60", got)
	}
	for freq, want := range map[int]string{2412: Band2G4, 5180: Band5G, 5955: Band6G, 900: ""} {
		if got := BandOfFreq(freq); got != want {
			t.Errorf("BandOfFreq(%d) = %q; want %q", freq, got, want)
		}
	}
}

// FuzzRoaming feeds datagrams through Open and the typed, validated decoding of every roaming
// message: no input may panic, and whatever decodes must validate again after a re-encode.
func FuzzRoaming(f *testing.F) {
	k, _ := DeriveKey(1, siteKey)
	s, _ := NewSealer(k, "node-a", nil)
	for typ, body := range roamingSamples() {
		b, err := s.Seal(typ, body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		raw, _ := json.Marshal(body)
		f.Add(append([]byte{byte(typ)}, raw...), true)
	}
	f.Add([]byte{byte(TypeSteer), '{', '}'}, true)
	f.Fuzz(func(t *testing.T, data []byte, bodyOnly bool) {
		var m Message
		if bodyOnly {
			// Skip the MAC: exercise the body decoders directly with attacker-chosen JSON
			// (what an authenticated but buggy or compromised node could send).
			if len(data) == 0 {
				return
			}
			m = Message{Type: Type(100 + int(data[0])%14), Sender: "n", Payload: data[1:]}
		} else {
			o := NewOpener(nil, k)
			var err error
			if m, err = o.Open(data); err != nil {
				return
			}
		}
		v, err := decodeAny(m)
		if err != nil {
			return
		}
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("re-marshal %s: %v", m.Type, err)
		}
		m2 := Message{Type: m.Type, Sender: m.Sender, Payload: raw}
		if _, err := decodeAny(m2); err != nil {
			t.Fatalf("%s decoded from %q but not from its re-encoding %q: %v", m.Type, m.Payload, raw, err)
		}
	})
}
