package main

// Verification of signed status events: the same scheme as hms_ffi_native/_orders/signing.py
// (examples/orders/README.md, "Signing"). HMAC-SHA256 over:
//
//	"hms.order.v1.event-signature.v1\n"
//	u32be(len)+bytes of: id, type, metadata.source, metadata.correlationId, metadata.userId,
//	                     data.message_type, data.message
//	i64be(timestamp as microseconds since the Unix epoch)

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	hms "github.com/hms-ffi/hms-ffi-native/bindings/go"
)

const (
	sigDomain   = "hms.order.v1.event-signature.v1\n"
	sigAlg      = "HMAC-SHA256"
	eventType   = "hms.order.v1.OrderStatusChanged"
	messageType = "hms.order.v1.OrderStatusChanged"
	statusTopic = "order.status"
	minKeyBytes = 16
)

// envelope is a decoded event envelope: the map as it arrived (kept for re-encoding) and its fields.
type envelope struct {
	raw                                hms.Map
	data                               hms.Map
	ID, Type                           string
	Timestamp                          time.Time
	Source, CorrelationID, UserID      string
	MessageType, Alg, KeyID, Signature string
	Message                            []byte
}

func str(m hms.Map, key string) (string, error) {
	v, ok := m.Get(key)
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s is a %T, not a string", key, v)
	}
	return s, nil
}

func subMap(m hms.Map, key string) (hms.Map, error) {
	v, ok := m.Get(key)
	if !ok || v == nil {
		return nil, nil
	}
	sm, ok := v.(hms.Map)
	if !ok {
		return nil, fmt.Errorf("%s is a %T, not a map", key, v)
	}
	return sm, nil
}

// decodeEnvelope parses the CBOR event envelope {id, type, timestamp, data, metadata}.
func decodeEnvelope(payload []byte) (*envelope, error) {
	v, err := hms.DecodeCBOR(payload)
	if err != nil {
		return nil, err
	}
	m, ok := v.(hms.Map)
	if !ok {
		return nil, fmt.Errorf("envelope is a %T, not a map", v)
	}
	e := &envelope{raw: m}
	if e.ID, err = str(m, "id"); err != nil {
		return nil, err
	}
	if e.Type, err = str(m, "type"); err != nil {
		return nil, err
	}
	ts, _ := m.Get("timestamp")
	switch t := ts.(type) {
	case time.Time:
		e.Timestamp = t
	case string:
		if e.Timestamp, err = time.Parse(time.RFC3339Nano, t); err != nil {
			return nil, fmt.Errorf("timestamp: %v", err)
		}
	default:
		return nil, fmt.Errorf("timestamp is a %T, not a time", ts)
	}
	md, err := subMap(m, "metadata")
	if err != nil {
		return nil, err
	}
	for key, dst := range map[string]*string{"source": &e.Source, "correlationId": &e.CorrelationID, "userId": &e.UserID} {
		if *dst, err = str(md, key); err != nil {
			return nil, err
		}
	}
	if e.data, err = subMap(m, "data"); err != nil {
		return nil, err
	}
	for key, dst := range map[string]*string{"message_type": &e.MessageType, "alg": &e.Alg, "key_id": &e.KeyID, "signature": &e.Signature} {
		if *dst, err = str(e.data, key); err != nil {
			return nil, err
		}
	}
	if msg, ok := e.data.Get("message"); ok {
		b, ok := msg.([]byte)
		if !ok {
			return nil, fmt.Errorf("data.message is a %T, not bytes", msg)
		}
		e.Message = b
	}
	return e, nil
}

func canonicalBytes(e *envelope) []byte {
	buf := []byte(sigDomain)
	for _, s := range []string{e.ID, e.Type, e.Source, e.CorrelationID, e.UserID, e.MessageType} {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
		buf = append(buf, s...)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(e.Message)))
	buf = append(buf, e.Message...)
	return binary.BigEndian.AppendUint64(buf, uint64(e.Timestamp.UnixMicro()))
}

func keyID(key []byte) string {
	h := sha256.Sum256(key)
	return hex.EncodeToString(h[:4])
}

// verify checks the envelope's signature; nil means authentic.
func verify(key []byte, e *envelope) error {
	if e.data == nil {
		return errors.New("event data is not a map: unsigned")
	}
	if e.Alg != sigAlg {
		return fmt.Errorf("event is not signed with %s (alg=%q)", sigAlg, e.Alg)
	}
	if e.Signature == "" {
		return errors.New("event has no signature")
	}
	if e.KeyID != keyID(key) {
		return fmt.Errorf("event was signed with key %q, not ours (%s)", e.KeyID, keyID(key))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(canonicalBytes(e))
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(e.Signature)) {
		return errors.New("HMAC-SHA256 signature does not match: the event was changed after signing")
	}
	if e.MessageType != messageType {
		return fmt.Errorf("unexpected message type %q", e.MessageType)
	}
	return nil
}

func parseKey(text, where string) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("%s must hold the key as hex digits", where)
	}
	if len(key) < minKeyBytes {
		return nil, fmt.Errorf("%s holds a %d-byte key; use at least %d bytes", where, len(key), minKeyBytes)
	}
	return key, nil
}

// loadKey reads the shared key from HMS_ORDERS_HMAC_KEY (hex) or HMS_ORDERS_HMAC_KEY_FILE (hex text in a
// file that group and others cannot read).
func loadKey() ([]byte, error) {
	if v := os.Getenv("HMS_ORDERS_HMAC_KEY"); v != "" {
		return parseKey(v, "HMS_ORDERS_HMAC_KEY")
	}
	path := os.Getenv("HMS_ORDERS_HMAC_KEY_FILE")
	if path == "" {
		return nil, errors.New("no signing key: set HMS_ORDERS_HMAC_KEY (hex) or HMS_ORDERS_HMAC_KEY_FILE (a file of mode 0600 holding hex)")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open the key file: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: others may read it; chmod 600 it", path, st.Mode().Perm())
	}
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	return parseKey(string(b[:n]), "key file "+path)
}
