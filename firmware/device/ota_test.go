package device

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshroot/board"
	"meshroot/ota"
	"meshroot/ota/bootenv"
	"meshroot/ota/repo"
	"meshroot/provision/devcloud"
	"meshroot/provision/devcloud/devcloudtest"
	"meshroot/provision/onboard"
)

// trialDisk makes the board's disk as a sparse file under root with slot b on trial (the
// bootloader booted it with upgrade_available=1), as after an update and its reboot.
func trialDisk(t *testing.T, root string) *bootenv.Store {
	t.Helper()
	b, _ := board.Lookup("qemu-virt-arm64")
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	fh, err := os.Create(filepath.Join(root, "dev/vda"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	fh.Truncate(b.Flash.Size)
	st, err := bootenv.NewStore(int(b.Flash.Env.Size), bootenv.Incremental, bootenv.Copy{Dev: fh, Offset: b.Flash.Env.Offset},
		bootenv.Copy{Dev: fh, Offset: b.Flash.Env.RedundOffset})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := bootenv.FromMap(map[string]string{ota.VarBootSlot: "b", ota.VarUpgradeAvailable: "1", ota.VarBootCount: "1",
		ota.VarTrial: "qemu-virt-arm64/stable/abc.slot", ota.VarTrialSlot: "b", ota.VarTrialFrom: "0.1.0",
		ota.VarVersionPrefix + "a": "0.1.0", ota.VarVersionPrefix + "b": "0.2.0-test"})
	if err := st.Save(e); err != nil {
		t.Fatal(err)
	}
	mkfile(t, root, "proc/cmdline", []byte("console=ttyAMA0 meshroot.slot=b\n"))
	return st
}

// TestOTATrialCommits: the image has a TUF root, the device boots an update on trial; once
// every service is up and the cloud answers (after pairing here), the OTA service commits it.
func TestOTATrialCommits(t *testing.T) {
	r := newRig(t)
	// The cloud serves an OTA repository whose root the image trusts.
	repoDir := filepath.Join(t.TempDir(), "repo")
	pub, err := repo.Init(repoDir, filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Refresh(); err != nil {
		t.Fatal(err)
	}
	rootJSON, _ := pub.RootJSON()
	mkfile(t, r.root, OTARoot, rootJSON)
	r.cloud.Stop()
	r.cloud = devcloudtest.Start(t, "", devcloud.Config{OTADir: repoDir})
	r.reseed(t)
	env := trialDisk(t, r.root)
	r.start(t)
	select {
	case <-r.ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("no ready line; console:\n%s", r.console.String())
	}
	st, _ := r.status(t)
	if st.OTA.State != "waiting" {
		t.Errorf("OTA before enrollment = %+v; want waiting for the repository location", st.OTA)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sess, err := onboard.Pair(ctx, &onboard.HTTPTransport{URL: "http://" + r.addr(t, OnboardPort)}, r.label)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Setup(ctx, onboard.Setup{ClaimToken: r.claim.Token, CloudURL: r.claim.CloudURL, CAPin: r.claim.CAPin,
		SiteName: "Lab", WiFiSSID: "Meshroot", WiFiPassphrase: passphrase, Country: "DE"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the trial to be committed", func() bool {
		e, err := env.Load()
		if err != nil {
			return false
		}
		up, _ := e.Get(ota.VarUpgradeAvailable)
		trial, _ := e.Get(ota.VarTrial)
		return up == "0" && trial == ""
	})
	st, _ = r.status(t)
	if st.OTA.State != "running" || st.OTA.Slot != "b" || !strings.HasPrefix(st.OTA.Repository, r.cloud.URL) {
		t.Errorf("OTA status = %+v; want running from slot b with the cloud's repository", st.OTA)
	}
	if !strings.Contains(r.console.String(), `"msg":"ota: committed"`) {
		t.Errorf("console lacks the commit line")
	}
}
