"""Signed status events: HMAC-SHA256 over the canonical bytes of an event envelope.

The envelope is the pub/sub API's ({id, type, timestamp, data, metadata: {source, correlationId,
userId}}, CBOR, published with the HMS_MSG_EVENT flag). Its ``data`` is a map:

    {"message_type": "hms.order.v1.OrderStatusChanged",
     "message":      <bytes: the protobuf-encoded OrderStatusChanged>,
     "alg":          "HMAC-SHA256",
     "key_id":       <hex of the first 4 bytes of SHA-256(key): which key signed>,
     "signature":    <lowercase hex of HMAC-SHA256(key, canonical bytes)>}

The canonical bytes (the same in every language; examples/orders/go/signing.go):

    b"hms.order.v1.event-signature.v1\\n"
    then, each as a 4-byte big-endian length followed by that many bytes:
        id, type, metadata.source, metadata.correlationId, metadata.userId,
        data.message_type, data.message
    then the timestamp as 8 bytes: signed big-endian microseconds since 1970-01-01T00:00:00Z.

Strings are UTF-8; an absent (None) metadata field is the empty string. What is signed is the bytes
of ``data.message`` as they travel, never a re-encoding, so the protobuf encoder need not be
canonical. A receiver verifies (constant-time compare) before it decodes the message, then checks
that the event is not stale (``version``), and applies it only then.

The key (at least 16 bytes) comes from HMS_ORDERS_HMAC_KEY (hex) or from the file named by
HMS_ORDERS_HMAC_KEY_FILE (hex text; refused when group or others may read it, like ssh keys).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
import stat
import struct
from typing import Any, Mapping, Optional

DOMAIN = b"hms.order.v1.event-signature.v1\n"
ALG = "HMAC-SHA256"
EVENT_TYPE = "hms.order.v1.OrderStatusChanged"
MESSAGE_TYPE = "hms.order.v1.OrderStatusChanged"
TOPIC = "order.status"
KEY_ENV = "HMS_ORDERS_HMAC_KEY"
KEY_FILE_ENV = "HMS_ORDERS_HMAC_KEY_FILE"
MIN_KEY_BYTES = 16
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class SignatureError(Exception):
    """The event is not authentic: no or bad signature, unknown algorithm or key, malformed data."""


class KeyError_(Exception):
    """No usable key."""


def _parse_key(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyError_(f"{where} must hold the key as hex digits") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyError_(f"{where} holds a {len(key)}-byte key; use at least {MIN_KEY_BYTES} bytes "
                        f"({2 * MIN_KEY_BYTES} hex digits)")
    return key


def load_key(environ: Optional[Mapping[str, str]] = None) -> bytes:
    """The shared key from HMS_ORDERS_HMAC_KEY (hex) or HMS_ORDERS_HMAC_KEY_FILE."""
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV):
        return _parse_key(env[KEY_ENV], KEY_ENV)
    path = env.get(KEY_FILE_ENV)
    if not path:
        raise KeyError_(f"no signing key: set {KEY_ENV} (hex) or {KEY_FILE_ENV} (a file of mode 0600 holding hex)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise KeyError_(f"cannot open the key file {path}: {e.strerror}") from None
    with os.fdopen(fd) as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyError_(f"key file {path} has mode {stat.S_IMODE(mode):04o}: others may read it; chmod 600 it")
        return _parse_key(f.read(), f"key file {path}")


def create_key_file(path: str) -> bytes:
    """Writes a fresh 32-byte key as hex to a new file of mode 0600 (fails if it exists)."""
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def timestamp_micros(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return (ts - _EPOCH) // dt.timedelta(microseconds=1)


def _field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _text(s: Any, what: str) -> bytes:
    if s is None:
        return b""
    if not isinstance(s, str):
        raise SignatureError(f"event {what} is a {type(s).__name__}, not a string")
    return s.encode("utf-8")


def canonical_bytes(*, id: str, type: str, timestamp: dt.datetime, source: Optional[str],
                    correlation_id: Optional[str], user_id: Optional[str], message_type: str,
                    message: bytes) -> bytes:
    """The bytes HMAC-SHA256 signs (see the module docstring)."""
    parts = [DOMAIN]
    for value, what in ((id, "id"), (type, "type"), (source, "source"), (correlation_id, "correlationId"),
                        (user_id, "userId"), (message_type, "message_type")):
        parts.append(_field(_text(value, what)))
    if not isinstance(message, (bytes, bytearray)):
        raise SignatureError(f"event data.message is a {builtin_type(message).__name__}, not bytes")
    parts.append(_field(bytes(message)))
    parts.append(struct.pack(">q", timestamp_micros(timestamp)))
    return b"".join(parts)


builtin_type = type


def sign(key: bytes, **fields) -> str:
    return hmac.new(key, canonical_bytes(**fields), hashlib.sha256).hexdigest()


def signed_data(key: bytes, *, id: str, type: str, timestamp: dt.datetime, source: Optional[str],
                correlation_id: Optional[str], user_id: Optional[str], message: bytes) -> dict:
    """The event's ``data`` map, signature included."""
    sig = sign(key, id=id, type=type, timestamp=timestamp, source=source, correlation_id=correlation_id,
               user_id=user_id, message_type=MESSAGE_TYPE, message=message)
    return {"message_type": MESSAGE_TYPE, "message": message, "alg": ALG, "key_id": key_id(key), "signature": sig}


def verify_event(key: bytes, event) -> bytes:
    """Verifies a received :class:`hms_ffi_native.Event`; returns the signed message bytes.
    Raises :class:`SignatureError` saying why it is not authentic."""
    data = event.data
    if not isinstance(data, dict):
        raise SignatureError(f"event data is a {builtin_type(data).__name__}, not a map: unsigned")
    if data.get("alg") != ALG:
        raise SignatureError(f"event is not signed with {ALG} (alg={data.get('alg')!r})")
    sig = data.get("signature")
    if not isinstance(sig, str):
        raise SignatureError("event has no signature")
    if data.get("key_id") != key_id(key):
        raise SignatureError(f"event was signed with key {data.get('key_id')!r}, not ours ({key_id(key)})")
    message = data.get("message")
    expect = sign(key, id=event.id, type=event.type, timestamp=event.timestamp, source=event.source,
                  correlation_id=event.correlation_id, user_id=event.user_id,
                  message_type=data.get("message_type"), message=message)
    if not hmac.compare_digest(expect, sig):
        raise SignatureError("HMAC-SHA256 signature does not match: the event was changed after signing")
    if data.get("message_type") != MESSAGE_TYPE:
        raise SignatureError(f"unexpected message type {data.get('message_type')!r}")
    return bytes(message)
