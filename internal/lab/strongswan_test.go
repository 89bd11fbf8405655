package lab

import (
	"context"
	"strings"
	"testing"
	"time"

	"meshroot/internal/testenv"
)

func TestLabCharonPairDirect(t *testing.T) {
	testenv.Integration(t)
	testenv.Command(t, "charon")
	testenv.Command(t, "swanctl")
	l := New(t)
	aws, err := l.NewNS("aws")
	if err != nil {
		t.Fatal(err)
	}
	cgw, err := l.NewNS("cgw")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Veth(aws, "out0", cgw, "out0"); err != nil {
		t.Fatal(err)
	}
	if err := aws.AddAddr("out0", "198.51.100.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := cgw.AddAddr("out0", "198.51.100.2/24"); err != nil {
		t.Fatal(err)
	}
	const psk = "lab-psk-0123456789abcdef"
	resp, err := l.StartCharon(aws, CharonConfig{
		Name:     "aws",
		TunAddrs: []string{"169.254.10.1/30"},
		Conns: []Conn{{
			Name: "tun1", LocalAddrs: []string{"198.51.100.1"}, RemoteAddrs: []string{"198.51.100.2"},
			PSK: psk, DPDDelay: 10 * time.Second,
			Children: []Child{{DPDAction: "clear", StartAction: "none"}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	init, err := l.StartCharon(cgw, CharonConfig{
		Name:     "cgw",
		TunAddrs: []string{"169.254.10.2/30"},
		Conns: []Conn{{
			Name: "tun1", LocalAddrs: []string{"198.51.100.2"}, RemoteAddrs: []string{"198.51.100.1"},
			PSK: psk, DPDDelay: 10 * time.Second, KeyingTries: -1,
			Children: []Child{{DPDAction: "restart", StartAction: "start"}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sa, err := init.WaitUp(ctx, "tun1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cgw IKE_SA: %+v", sa)
	if _, err := resp.WaitUp(ctx, "tun1"); err != nil {
		t.Fatal(err)
	}
	if err := cgw.Ping("", "169.254.10.1", 3); err != nil {
		t.Errorf("ping over tunnel: %v", err)
	}
	if strings.Contains(init.Log()+resp.Log(), psk) {
		t.Errorf("charon log contains the PSK")
	}
}
