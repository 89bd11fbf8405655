package devcloud

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"meshroot/provision/api"
	"meshroot/provision/internal/persist"
	"meshroot/provision/profile"
)

// The cloud's storage: one bbolt file, cloud.db, in the data directory.
//
//	sites    site id        → siteRecord (JSON)
//	claims   SHA-256(token) → claimRecord (JSON); the token itself is never stored
//	devices  serial         → Device (JSON)
//	certs    cert serial    → device serial (revoking a device drops its certificate)
//	secrets  reference      → AES-256-GCM sealed value (master.key), the reference as AAD
//	logs     site id        → bucket: 8-byte time ‖ 8-byte sequence → LogRecord (JSON)
//	logids   device serial  → bucket: "ids": log_id → 8-byte sequence, "order": sequence → log_id
//	                           (the device's most recent log_ids, the ingest's dedupe window)
var (
	bSites   = []byte("sites")
	bClaims  = []byte("claims")
	bDevices = []byte("devices")
	bCerts   = []byte("certs")
	bSecrets = []byte("secrets")
	bLogs    = []byte("logs")
	bLogIDs  = []byte("logids")
	bIDs     = []byte("ids")
	bOrder   = []byte("order")
)

var errNotFound = errors.New("not found")

// The stored types are the API's.
type (
	Site      = api.Site
	Device    = api.Device
	LogRecord = api.LogRecord
)

type siteRecord struct {
	Site
	Template *profile.Profile `json:"template"`
	Envelope []byte           `json:"envelope,omitempty"`
	Digest   string           `json:"digest,omitempty"`
	// Refs are the secret references of the current profile (what its devices may read).
	Refs []string `json:"refs,omitempty"`
}

type claimRecord struct {
	Site      string     `json:"site_id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"`
}

type store struct {
	db  *bolt.DB
	box *persist.Box
}

func openStore(path string, box *persist.Box) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bSites, bClaims, bDevices, bCerts, bSecrets, bLogs, bLogIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db, box: box}, nil
}

func (s *store) close() error { return s.db.Close() }

func getJSON(b *bolt.Bucket, key string, v any) error {
	raw := b.Get([]byte(key))
	if raw == nil {
		return errNotFound
	}
	return json.Unmarshal(raw, v)
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

func (s *store) site(id string) (*siteRecord, error) {
	var r siteRecord
	err := s.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bSites), id, &r) })
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// updateSite runs fn on the site record inside one transaction and stores the result.
func (s *store) updateSite(id string, create bool, fn func(r *siteRecord) error) (*siteRecord, error) {
	var out siteRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bSites)
		var r siteRecord
		err := getJSON(b, id, &r)
		switch {
		case errors.Is(err, errNotFound) && create:
		case errors.Is(err, errNotFound):
			return errNotFound
		case err != nil:
			return err
		case create:
			return errExists
		}
		if err := fn(&r); err != nil {
			return err
		}
		out = r
		return putJSON(b, id, &r)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

var errExists = errors.New("exists")

func (s *store) sites() ([]Site, error) {
	var out []Site
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bSites).ForEach(func(k, v []byte) error {
			var r siteRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r.Site)
			return nil
		})
	})
	return out, err
}

func (s *store) putClaim(hash string, c claimRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bClaims), hash, &c) })
}

// putSecret seals and stores a secret value.
func (s *store) putSecret(ref string, value []byte) error {
	sealed := s.box.Seal("secret:"+ref, value)
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bSecrets).Put([]byte(ref), sealed) })
}

func (s *store) secret(ref string) ([]byte, error) {
	var sealed []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bSecrets).Get([]byte(ref))
		if v == nil {
			return errNotFound
		}
		sealed = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.box.Open("secret:"+ref, sealed)
}

// deviceByCert finds the device holding a certificate serial (revoked certificates map to none).
func (s *store) deviceByCert(certSerial string) (*Device, error) {
	var d Device
	err := s.db.View(func(tx *bolt.Tx) error {
		serial := tx.Bucket(bCerts).Get([]byte(certSerial))
		if serial == nil {
			return errNotFound
		}
		return getJSON(tx.Bucket(bDevices), string(serial), &d)
	})
	if err != nil {
		return nil, err
	}
	if d.CertSerial != certSerial && d.PrevCertSerial != certSerial {
		return nil, errNotFound
	}
	return &d, nil
}

func (s *store) touchDevice(serial string, now time.Time, profileVersion uint64) {
	s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bDevices)
		var d Device
		if err := getJSON(b, serial, &d); err != nil {
			return err
		}
		d.LastSeen = now
		if profileVersion > 0 {
			d.ProfileVersion = profileVersion
		}
		return putJSON(b, serial, &d)
	})
}

func (s *store) devices(site string) ([]Device, error) {
	var out []Device
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bDevices).ForEach(func(k, v []byte) error {
			var d Device
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			if site == "" || d.SiteID == site {
				out = append(out, d)
			}
			return nil
		})
	})
	return out, err
}

func (s *store) deleteDevice(serial string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var d Device
		if err := getJSON(tx.Bucket(bDevices), serial, &d); err != nil {
			return err
		}
		for _, cs := range []string{d.CertSerial, d.PrevCertSerial} {
			if cs == "" {
				continue
			}
			if err := tx.Bucket(bCerts).Delete([]byte(cs)); err != nil {
				return err
			}
		}
		if tx.Bucket(bLogIDs).Bucket([]byte(serial)) != nil {
			if err := tx.Bucket(bLogIDs).DeleteBucket([]byte(serial)); err != nil {
				return err
			}
		}
		return tx.Bucket(bDevices).Delete([]byte(serial))
	})
}

// appendLogs stores a device's log records, skipping those whose LogID is in the device's dedupe
// window (the last window log_ids it stored); the records and the window change in one
// transaction, so a line is stored exactly when its id is remembered, across restarts too.
// It returns how many were stored and how many were duplicates.
func (s *store) appendLogs(site, serial string, recs []LogRecord, window int) (stored, dups int, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		stored, dups = 0, 0
		b, err := tx.Bucket(bLogs).CreateBucketIfNotExists([]byte(site))
		if err != nil {
			return err
		}
		var ids, order *bolt.Bucket
		dev := tx.Bucket(bLogIDs).Bucket([]byte(serial))
		for _, r := range recs {
			if r.LogID != "" {
				if dev == nil {
					if dev, err = tx.Bucket(bLogIDs).CreateBucketIfNotExists([]byte(serial)); err != nil {
						return err
					}
				}
				if ids == nil {
					if ids, err = dev.CreateBucketIfNotExists(bIDs); err != nil {
						return err
					}
					if order, err = dev.CreateBucketIfNotExists(bOrder); err != nil {
						return err
					}
				}
				if ids.Get([]byte(r.LogID)) != nil {
					dups++
					continue
				}
				n, _ := dev.NextSequence()
				nk := binary.BigEndian.AppendUint64(nil, n)
				if err := ids.Put([]byte(r.LogID), nk); err != nil {
					return err
				}
				if err := order.Put(nk, []byte(r.LogID)); err != nil {
					return err
				}
				// Forget the ids that fell out of the window (more than one after the window
				// was made smaller).
				c := order.Cursor()
				for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k)+uint64(window) <= n; k, v = c.First() {
					if err := ids.Delete(v); err != nil {
						return err
					}
					if err := order.Delete(k); err != nil {
						return err
					}
				}
			}
			seq, _ := b.NextSequence()
			key := binary.BigEndian.AppendUint64(nil, uint64(r.Received.UnixNano()))
			key = binary.BigEndian.AppendUint64(key, seq)
			if err := putJSON(b, string(key), &r); err != nil {
				return err
			}
			stored++
		}
		return nil
	})
	return stored, dups, err
}

// logIDWindow returns the log_ids a device's dedupe window holds, oldest first (for tests).
func (s *store) logIDWindow(serial string) []string {
	var out []string
	s.db.View(func(tx *bolt.Tx) error {
		dev := tx.Bucket(bLogIDs).Bucket([]byte(serial))
		if dev == nil || dev.Bucket(bOrder) == nil {
			return nil
		}
		return dev.Bucket(bOrder).ForEach(func(_, v []byte) error {
			out = append(out, string(v))
			return nil
		})
	})
	return out
}

// LogQuery selects log records of one site.
type LogQuery struct {
	Site   string
	Tunnel string
	Device string
	Since  time.Time
	Limit  int
}

func (s *store) logs(q LogQuery) ([]LogRecord, error) {
	var out []LogRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bLogs).Bucket([]byte(q.Site))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		start := binary.BigEndian.AppendUint64(nil, uint64(max(q.Since.UnixNano(), 0)))
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			var r LogRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if (q.Tunnel != "" && r.Tunnel != q.Tunnel) || (q.Device != "" && r.Device != q.Device) {
				continue
			}
			out = append(out, r)
			if len(out) >= q.Limit {
				break
			}
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Received.Before(out[j].Received) })
	return out, err
}
