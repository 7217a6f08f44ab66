"""The order flow of examples/orders: the Python pieces, shipped in the wheel so that `hms-ffi demo`
runs from an installed package.

    python -m hms_ffi_native._orders.oms --db orders.db        the OMS (SQLite), serves hms.order.v1
    python -m hms_ffi_native._orders.frontend                  the API front end in Python (the Go one
                                                               is examples/orders/go)

order_pb2 / oms_integration_pb2 are generated from examples/orders/proto by examples/orders/gen.sh.
Requests and replies travel as protobuf (HMS_CT_PROTOBUF = 4); status events are signed (signing.py).
"""
from __future__ import annotations

SERVICE_ORDERS = "hms.order.v1.OrderService"
SERVICE_OMS = "hms.order.v1.OMSIntegrationService"
SERVICE_VERSION = "1.0.0"

_installed = False


def install_protobuf_codec() -> None:
    """Makes hms_ffi_native send protobuf messages as HMS_CT_PROTOBUF (4).

    The package's codecs (raw, cbor, json) do not know protobuf yet: a handler's protobuf reply or a
    client's protobuf request would go out as CBOR (failing) or as raw bytes (content type 1). Until
    the codec layer handles ``google.protobuf.message.Message`` itself, this wraps the encoder the
    call path uses: a Message becomes ``(SerializeToString(), 4)``, everything else is untouched.
    Received protobuf payloads already arrive as ``bytes`` (unknown content types are not decoded).
    A no-op when the package already encodes messages as protobuf.
    """
    global _installed
    if _installed:
        return
    from google.protobuf.message import Message

    from .. import _codec, _core
    from . import order_pb2

    probe = order_pb2.GetOrderRequest(order_id=1)
    try:
        native = _codec.encode(probe)[1] == _codec.CT_PROTOBUF
    except Exception:
        native = False
    if not native:
        original = _core.encode

        def encode(value, codec=None):
            if isinstance(value, Message) and codec in (None, "protobuf"):
                return value.SerializeToString(), _codec.CT_PROTOBUF
            return original(value, codec)

        _core.encode = encode
    _installed = True
