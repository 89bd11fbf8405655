package devcloud

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"meshroot/provision/api"
	"meshroot/provision/identity"
	"meshroot/provision/profile"
)

const (
	smallBody = 64 << 10
	logBody   = 1 << 20
	// MaxWait bounds a device's long poll for a new profile.
	MaxWait = 60 * time.Second
)

var (
	reSiteID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	reRef    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,255}$`)
)

// claimError is a refused claim token; the reason never contains the token.
type claimError struct{ reason string }

func (e claimError) Error() string { return e.reason }

func (s *Server) postEnroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if !readJSON(w, r, smallBody, &req) {
		return
	}
	if req.ClaimToken == "" {
		writeError(w, http.StatusBadRequest, "claim_token: missing")
		return
	}
	csr, err := parseCSR([]byte(req.CSR), req.Serial)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := s.now()
	var dev Device
	var certPEM []byte
	err = s.st.db.Update(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bClaims)
		hash := hashToken(req.ClaimToken)
		var c claimRecord
		switch err := getJSON(cb, hash, &c); {
		case errors.Is(err, errNotFound):
			return claimError{"unknown claim token"}
		case err != nil:
			return err
		case c.UsedAt != nil && !sameDevice(tx, c, req.Serial, csr):
			return claimError{"claim token already used"}
		case !now.Before(c.ExpiresAt):
			return claimError{"claim token expired"}
		}
		if tx.Bucket(bSites).Get([]byte(c.Site)) == nil {
			return claimError{"the claim's site no longer exists"}
		}
		cert, pemBytes, err := s.ca.signDevice(csr, req.Serial, c.Site, now, s.cfg.CertTTL)
		if err != nil {
			return err
		}
		db := tx.Bucket(bDevices)
		var old Device
		if getJSON(db, req.Serial, &old) == nil {
			// Re-enrollment (a factory reset made a new key): the old certificates stop working.
			tx.Bucket(bCerts).Delete([]byte(old.CertSerial))
			if old.PrevCertSerial != "" {
				tx.Bucket(bCerts).Delete([]byte(old.PrevCertSerial))
			}
		}
		dev = Device{
			Serial: req.Serial, SiteID: c.Site, CertSerial: cert.SerialNumber.Text(16), CertNotAfter: cert.NotAfter,
			KeyFingerprint: fingerprint(cert), EnrolledAt: now, LastSeen: now,
		}
		c.UsedAt, c.UsedBy = &now, req.Serial
		if err := putJSON(cb, hash, &c); err != nil {
			return err
		}
		if err := putJSON(db, req.Serial, &dev); err != nil {
			return err
		}
		certPEM = pemBytes
		return tx.Bucket(bCerts).Put([]byte(dev.CertSerial), []byte(req.Serial))
	})
	var ce claimError
	if errors.As(err, &ce) {
		s.log.Info("enrollment refused", "serial", req.Serial, "remote", r.RemoteAddr, "reason", ce.reason)
		writeError(w, http.StatusUnauthorized, ce.reason)
		return
	}
	if err != nil {
		s.log.Error("enrollment failed", "serial", req.Serial, "err", err)
		writeError(w, http.StatusInternalServerError, "enrollment failed")
		return
	}
	s.log.Info("device enrolled", "serial", dev.Serial, "site", dev.SiteID, "cert_serial", dev.CertSerial)
	if req.Settings != nil {
		s.applySettings(dev.SiteID, *req.Settings)
	}
	fi := s.fleetInfo()
	writeJSON(w, http.StatusCreated, api.EnrollResponse{
		Serial: dev.Serial, SiteID: dev.SiteID, Certificate: string(certPEM), CA: fi.CAPEM, ProfileKeys: fi.ProfileKeys,
	})
}

// sameDevice reports whether a used claim was used by this very device and key: the answer to
// its enrollment was lost (a lossy uplink) and it is asking again. It gets a new certificate
// for the same key; the one it never received stops working.
func sameDevice(tx *bolt.Tx, c claimRecord, serial string, csr *x509.CertificateRequest) bool {
	if c.UsedBy != serial {
		return false
	}
	var d Device
	if getJSON(tx.Bucket(bDevices), serial, &d) != nil {
		return false
	}
	pk, ok := csr.PublicKey.(*ecdsa.PublicKey)
	return ok && d.SiteID == c.Site && d.KeyFingerprint == identity.Fingerprint(pk)
}

func fingerprint(c *x509.Certificate) string {
	if pk, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return identity.Fingerprint(pk)
	}
	return ""
}

// applySettings fills empty template fields with what the app gave the device, and issues the
// first profile when the template became complete.
func (s *Server) applySettings(site string, set api.SiteSettings) {
	changed := false
	rec, err := s.st.updateSite(site, false, func(r *siteRecord) error {
		if r.Template.WiFi.SSID == "" && set.WiFiSSID != "" {
			r.Template.WiFi.SSID, changed = set.WiFiSSID, true
		}
		if r.Template.Country == "" && set.Country != "" {
			r.Template.Country, changed = set.Country, true
		}
		if r.Name == "" && set.Name != "" {
			r.Name, changed = set.Name, true
		}
		return nil
	})
	if err != nil {
		return
	}
	if rec.ProfileVersion == 0 || changed {
		if _, err := s.issue(site, nil); err != nil {
			s.log.Info("no profile issued yet", "site", site, "reason", err.Error())
		}
	}
}

// issue builds the next profile version of a site from its template (after mutate, if given),
// signs it and puts it in force. Validation errors come back as profile.FieldErrors.
func (s *Server) issue(site string, mutate func(t *profile.Profile) error) (*api.ProfileIssued, error) {
	s.issueMu.Lock()
	defer s.issueMu.Unlock()
	now := s.now().UTC().Truncate(time.Second)
	var out api.ProfileIssued
	_, err := s.st.updateSite(site, false, func(r *siteRecord) error {
		t := *r.Template
		if mutate != nil {
			if err := mutate(&t); err != nil {
				return err
			}
		}
		p := t
		p.SchemaVersion = profile.SchemaVersion
		p.Version = r.ProfileVersion + 1
		p.IssuedAt, p.ExpiresAt = now, now.Add(s.cfg.ProfileTTL)
		p.Site = profile.Site{ID: r.ID, Name: r.Name}
		if p.Site.Name == "" {
			p.Site.Name = r.ID
		}
		env, err := profile.Sign(&p, s.profileKey)
		if err != nil {
			return err
		}
		payload, _ := p.Marshal()
		sum := sha256.Sum256(payload)
		r.Template = &t
		r.ProfileVersion, r.ProfileExpiresAt = p.Version, p.ExpiresAt
		r.Envelope, r.Digest, r.Refs = env, hex.EncodeToString(sum[:]), p.SecretRefs()
		out = api.ProfileIssued{SiteID: r.ID, Version: p.Version, Digest: r.Digest, ExpiresAt: p.ExpiresAt}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("profile issued", "site", site, "version", out.Version)
	s.notify(site)
	return &out, nil
}

func (s *Server) waitChan(site string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.siteWait[site]
	if !ok {
		ch = make(chan struct{})
		s.siteWait[site] = ch
	}
	return ch
}

func (s *Server) notify(site string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.siteWait[site]; ok {
		close(ch)
		delete(s.siteWait, site)
	}
}

func device(r *http.Request) *Device { return r.Context().Value(ctxKey{}).(*Device) }

// postRenew issues a new certificate for the calling device's key. The certificate it replaces
// keeps working until it expires (the one before that stops).
func (s *Server) postRenew(w http.ResponseWriter, r *http.Request) {
	d := device(r)
	var req api.RenewRequest
	if !readJSON(w, r, smallBody, &req) {
		return
	}
	csr, err := parseCSR([]byte(req.CSR), d.Serial)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if pk, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || identity.Fingerprint(pk) != d.KeyFingerprint {
		writeError(w, http.StatusBadRequest, "csr: not the device's key (a new key needs a new claim)")
		return
	}
	now := s.now()
	var certPEM []byte
	err = s.st.db.Update(func(tx *bolt.Tx) error {
		db := tx.Bucket(bDevices)
		var cur Device
		if err := getJSON(db, d.Serial, &cur); err != nil {
			return err
		}
		cert, pemBytes, err := s.ca.signDevice(csr, cur.Serial, cur.SiteID, now, s.cfg.CertTTL)
		if err != nil {
			return err
		}
		if cur.PrevCertSerial != "" {
			tx.Bucket(bCerts).Delete([]byte(cur.PrevCertSerial))
		}
		cur.PrevCertSerial, cur.CertSerial, cur.CertNotAfter = cur.CertSerial, cert.SerialNumber.Text(16), cert.NotAfter
		certPEM = pemBytes
		if err := putJSON(db, cur.Serial, &cur); err != nil {
			return err
		}
		return tx.Bucket(bCerts).Put([]byte(cur.CertSerial), []byte(cur.Serial))
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "renewal failed")
		return
	}
	s.log.Info("device certificate renewed", "serial", d.Serial)
	fi := s.fleetInfo()
	writeJSON(w, http.StatusOK, api.EnrollResponse{Serial: d.Serial, SiteID: d.SiteID, Certificate: string(certPEM), CA: fi.CAPEM, ProfileKeys: fi.ProfileKeys})
}

func (s *Server) getDeviceSelf(w http.ResponseWriter, r *http.Request) {
	d := device(r)
	writeJSON(w, http.StatusOK, api.DeviceSelf{Serial: d.Serial, SiteID: d.SiteID, ProfileVersion: d.ProfileVersion})
}

// getProfile returns the site's signed profile. With If-None-Match of the current ETag it
// answers 304, after waiting up to ?wait= (at most MaxWait) for a new version.
func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) {
	d := device(r)
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		var err error
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			writeError(w, http.StatusBadRequest, "wait: want a duration such as 30s")
			return
		}
		wait = min(wait, MaxWait)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ch := s.waitChan(d.SiteID)
		rec, err := s.st.site(d.SiteID)
		if err != nil {
			writeError(w, http.StatusNotFound, "site "+d.SiteID+" is gone")
			return
		}
		if rec.Envelope == nil {
			writeError(w, http.StatusNotFound, "no profile issued for site "+d.SiteID+" yet")
			return
		}
		// Keep devices ahead of expiry: past half the lifetime, the next fetch gets a new version.
		if s.now().After(rec.ProfileExpiresAt.Add(-s.cfg.ProfileTTL / 2)) {
			if _, err := s.issue(d.SiteID, nil); err == nil {
				continue
			}
		}
		etag := `"` + rec.Digest + `"`
		if r.Header.Get("If-None-Match") == etag {
			if wait > 0 {
				select {
				case <-ch:
					continue
				case <-deadline.C:
				case <-r.Context().Done():
					return
				}
			}
			s.st.touchDevice(d.Serial, s.now(), rec.ProfileVersion)
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		s.st.touchDevice(d.Serial, s.now(), rec.ProfileVersion)
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/json")
		w.Write(rec.Envelope)
		return
	}
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) {
	d := device(r)
	ref := r.PathValue("ref")
	rec, err := s.st.site(d.SiteID)
	if err != nil || !slices.Contains(rec.Refs, ref) {
		s.log.Info("secret refused", "serial", d.Serial, "ref", ref)
		writeError(w, http.StatusForbidden, "secret "+ref+" is not referenced by this device's site profile")
		return
	}
	v, err := s.st.secret(ref)
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, "secret "+ref+" is not in the store")
		return
	}
	if err != nil {
		s.log.Error("secret unreadable", "ref", ref, "err", err)
		writeError(w, http.StatusInternalServerError, "secret unreadable")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, api.Secret{Ref: ref, Value: string(v)})
}

// maxLogID bounds a log line's log_id.
const maxLogID = 128

// postLogs ingests JSON lines. Known members: log_id, time (RFC 3339), level, msg, tunnel; the
// rest are kept as attributes. Ingest is idempotent by log_id: the device's shipper delivers
// at least once (firmware/logship tags each line "<boot id>-<sequence>"), so a line whose
// log_id is among the device's last Config.LogDedupeWindow stored ids is acknowledged and
// skipped. The window is stored with the records (one bbolt transaction), so it survives
// restarts. Lines without a log_id (older shippers) are stored as they come.
func (s *Server) postLogs(w http.ResponseWriter, r *http.Request) {
	d := device(r)
	now := s.now()
	recs, field, err := parseLogLines(http.MaxBytesReader(w, r.Body, logBody), now)
	if err != nil {
		if field != "" {
			writeError(w, http.StatusBadRequest, err.Error(), field)
		} else {
			writeError(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	for i := range recs {
		recs[i].SiteID, recs[i].Device = d.SiteID, d.Serial
	}
	stored, dups, err := s.st.appendLogs(d.SiteID, d.Serial, recs, s.cfg.LogDedupeWindow)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "log store failed")
		return
	}
	if dups > 0 {
		s.log.Debug("log lines already stored", "serial", d.Serial, "duplicates", dups)
	}
	s.st.touchDevice(d.Serial, now, 0)
	writeJSON(w, http.StatusAccepted, api.LogsAccepted{Accepted: stored, Duplicates: dups})
}

// parseLogLines reads a log upload (JSON lines, at most logBody bytes) into records received at
// now; an error names the line (and, for log_id, returns the field).
func parseLogLines(body io.Reader, now time.Time) ([]api.LogRecord, string, error) {
	var recs []api.LogRecord
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), logBody)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, "", fmt.Errorf("line %d: %v", n, err)
		}
		rec := api.LogRecord{Time: now, Received: now}
		if v, ok := m["log_id"]; ok {
			id, ok := v.(string)
			if !ok || id == "" || len(id) > maxLogID {
				return nil, "log_id", fmt.Errorf("line %d: log_id: want a string of 1-%d bytes", n, maxLogID)
			}
			rec.LogID = id
		}
		if v, ok := m["time"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				rec.Time = t
			}
		}
		rec.Level, _ = m["level"].(string)
		rec.Msg, _ = m["msg"].(string)
		rec.Tunnel, _ = m["tunnel"].(string)
		for _, k := range []string{"log_id", "time", "level", "msg", "tunnel"} {
			delete(m, k)
		}
		if len(m) > 0 {
			rec.Attrs = m
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, "", fmt.Errorf("body: %w", err)
	}
	return recs, "", nil
}

func (s *Server) getOTA(w http.ResponseWriter, r *http.Request) {
	d := device(r)
	info := api.OTAInfo{RepositoryURL: s.URL() + api.PathOTARepo, Channel: "stable"}
	if rec, err := s.st.site(d.SiteID); err == nil && rec.Template != nil {
		if rec.Template.OTA.Channel != "" {
			info.Channel = rec.Template.OTA.Channel
		}
		if rec.Template.OTA.RepositoryURL != "" {
			info.RepositoryURL = rec.Template.OTA.RepositoryURL
		}
	}
	writeJSON(w, http.StatusOK, info)
}

// --- operator / app API ---

func (s *Server) postSite(w http.ResponseWriter, r *http.Request) {
	var req api.CreateSiteRequest
	if !readJSON(w, r, smallBody, &req) {
		return
	}
	if !reSiteID.MatchString(req.ID) {
		writeError(w, http.StatusBadRequest, "id: want 1-63 of a-z, 0-9, '-'", "id")
		return
	}
	meshRef := "site/" + req.ID + "/mesh-key"
	key := make([]byte, 18)
	rand.Read(key)
	if err := s.st.putSecret(meshRef, []byte(b32(key))); err != nil {
		writeError(w, http.StatusInternalServerError, "secret store failed")
		return
	}
	t := profile.NewSiteProfile(req.ID, req.Name)
	t.Country, t.WiFi.SSID, t.Mesh.KeyRef = req.Country, req.WiFiSSID, meshRef
	rec, err := s.st.updateSite(req.ID, true, func(r *siteRecord) error {
		r.Site = api.Site{ID: req.ID, Name: req.Name, CreatedAt: s.now().UTC()}
		r.Template = t
		return nil
	})
	if errors.Is(err, errExists) {
		writeError(w, http.StatusConflict, "site "+req.ID+" exists")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("site created", "site", req.ID)
	if _, err := s.issue(req.ID, nil); err == nil {
		rec, _ = s.st.site(req.ID)
	}
	writeJSON(w, http.StatusCreated, rec.Site)
}

func (s *Server) getSites(w http.ResponseWriter, r *http.Request) {
	sites, err := s.st.sites()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if sites == nil {
		sites = []api.Site{}
	}
	writeJSON(w, http.StatusOK, sites)
}

func (s *Server) siteOr404(w http.ResponseWriter, r *http.Request) *siteRecord {
	rec, err := s.st.site(r.PathValue("site"))
	if err != nil {
		writeError(w, http.StatusNotFound, "no site "+r.PathValue("site"))
		return nil
	}
	return rec
}

func (s *Server) getSite(w http.ResponseWriter, r *http.Request) {
	if rec := s.siteOr404(w, r); rec != nil {
		writeJSON(w, http.StatusOK, rec.Site)
	}
}

func (s *Server) getSiteProfile(w http.ResponseWriter, r *http.Request) {
	rec := s.siteOr404(w, r)
	if rec == nil {
		return
	}
	if rec.Envelope == nil {
		writeError(w, http.StatusNotFound, "no profile issued for site "+rec.ID+" yet")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(rec.Envelope)
}

// issueAndAnswer runs issue and answers with the new version, or 422 naming the fields.
func (s *Server) issueAndAnswer(w http.ResponseWriter, site string, mutate func(t *profile.Profile) error) {
	out, err := s.issue(site, mutate)
	var fe profile.FieldErrors
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "no site "+site)
	case errors.As(err, &fe):
		fields := make([]string, len(fe))
		for i, e := range fe {
			fields[i] = e.Error()
		}
		writeError(w, http.StatusUnprocessableEntity, "the profile does not validate", fields...)
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Server) putSiteProfile(w http.ResponseWriter, r *http.Request) {
	site := r.PathValue("site")
	var t profile.Profile
	if !readJSON(w, r, smallBody, &t) {
		return
	}
	if t.Site.ID != "" && t.Site.ID != site {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("site.id %q is not %q", t.Site.ID, site), "site.id")
		return
	}
	s.issueAndAnswer(w, site, func(cur *profile.Profile) error {
		meshRef := cur.Mesh.KeyRef
		*cur = t
		if cur.Mesh.KeyRef == "" {
			cur.Mesh.KeyRef = meshRef
		}
		return nil
	})
}

func (s *Server) putSiteVPN(w http.ResponseWriter, r *http.Request) {
	var v *profile.VPN
	if !readJSON(w, r, smallBody, &v) {
		return
	}
	s.issueAndAnswer(w, r.PathValue("site"), func(cur *profile.Profile) error {
		cur.VPN = v
		return nil
	})
}

func (s *Server) postClaim(w http.ResponseWriter, r *http.Request) {
	rec := s.siteOr404(w, r)
	if rec == nil {
		return
	}
	var req api.ClaimRequest
	if r.ContentLength != 0 && !readJSON(w, r, smallBody, &req) {
		return
	}
	ttl := s.cfg.ClaimTTL
	if req.TTLSeconds < 0 || req.TTLSeconds > 30*24*3600 {
		writeError(w, http.StatusBadRequest, "ttl_s: want 0-2592000", "ttl_s")
		return
	}
	if req.TTLSeconds > 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	raw := make([]byte, 20)
	rand.Read(raw)
	tok := "mrc_" + b32(raw)
	now := s.now().UTC()
	if err := s.st.putClaim(hashToken(tok), claimRecord{Site: rec.ID, CreatedAt: now, ExpiresAt: now.Add(ttl)}); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("claim issued", "site", rec.ID, "expires_at", now.Add(ttl))
	writeJSON(w, http.StatusCreated, api.Claim{Token: tok, SiteID: rec.ID, ExpiresAt: now.Add(ttl), CloudURL: s.URL(), CAPin: s.CAPin()})
}

func (s *Server) getDevices(w http.ResponseWriter, r *http.Request) {
	ds, err := s.st.devices(r.URL.Query().Get("site"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if ds == nil {
		ds = []api.Device{}
	}
	writeJSON(w, http.StatusOK, ds)
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	serial := r.PathValue("serial")
	if err := identity.ValidateSerial(serial); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.st.deleteDevice(serial); errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, "no device "+serial)
		return
	} else if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("device revoked", "serial", serial)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) putSecret(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	if !reRef.MatchString(ref) {
		writeError(w, http.StatusBadRequest, "ref: not a secret reference", "ref")
		return
	}
	var req api.PutSecretRequest
	if !readJSON(w, r, smallBody, &req) {
		return
	}
	if req.Value == "" || len(req.Value) > 4096 {
		writeError(w, http.StatusBadRequest, "value: want 1-4096 bytes", "value")
		return
	}
	if err := s.st.putSecret(ref, []byte(req.Value)); err != nil {
		writeError(w, http.StatusInternalServerError, "secret store failed")
		return
	}
	s.log.Info("secret stored", "ref", ref)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq := LogQuery{Site: q.Get("site"), Tunnel: q.Get("tunnel"), Device: q.Get("device"), Limit: 500}
	if lq.Site == "" {
		writeError(w, http.StatusBadRequest, "site: required", "site")
		return
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since: want RFC 3339", "since")
			return
		}
		lq.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "limit: want 1-10000", "limit")
			return
		}
		lq.Limit = n
	}
	recs, err := s.st.logs(lq)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if recs == nil {
		recs = []api.LogRecord{}
	}
	writeJSON(w, http.StatusOK, recs)
}
