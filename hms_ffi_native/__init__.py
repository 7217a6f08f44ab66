"""hms-ffi-native: cross-language, cross-process function calls over shared memory.

    import hms_ffi_native as hms

    node = hms.Node("oms")
    orders = node.service("hms.oms.order", version="1.0.0")

    @orders.function()
    def CreateOrder(order, ctx):
        return {"id": 1, **order}

    node.start()
    with hms.connect("hms.oms.order", version="^1") as oms:
        print(oms.call("CreateOrder", {"customer_id": 7}, timeout=0.5))
"""
from ._errors import (STATUS_NAMES, Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded,
                      FailedPrecondition, FFIError, Internal, InvalidArgument, NotFound, OutOfRange,
                      PermissionDenied, ResourceExhausted, Unauthenticated, Unavailable, Unimplemented,
                      Unknown, error_for)
from ._core import (CallContext, Client, Node, Service, ServiceInfo, Stream, connect, default_runtime_dir,
                    list_services)
from ._ndarray import Loan, ReceivedPayload
from ._policy import Policy, load_policy
from ._retry import CircuitBreaker, ResilientClient, RetryPolicy
from ._schema import OneOf, Optional, Strict  # CBOR request schemas: Service.function(schema=...)
from ._topic import Event, EventMetadata, Message, Publisher, Subscription
from ._remote import (RemoteClient, RemotePublisher, RemoteStream, RemoteSubscription, list_remote_services,
                      publisher_remote, subscribe_remote)
from ._stats import StatsView, prometheus_text, stats
from ._tracing import TraceContextFilter, current_trace
from ._tracing import disable as disable_tracing
from ._tracing import enable as enable_tracing
from ._native import ffi as _ffi
from ._native import lib as _lib

__version__ = _ffi.string(_lib.hms_version_string()).decode()
ABI_VERSION = _lib.hms_abi_version()

__all__ = [
    "Node", "Service", "Client", "Stream", "Publisher", "Subscription", "Message", "Event", "EventMetadata", "CallContext", "ServiceInfo", "connect", "list_services",
    "default_runtime_dir", "FFIError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded",
    "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated", "error_for",
    "STATUS_NAMES", "ABI_VERSION", "__version__", "Loan", "ReceivedPayload",
    "RemoteClient", "RemoteStream", "RemoteSubscription", "RemotePublisher", "subscribe_remote",
    "publisher_remote", "list_remote_services", "RetryPolicy", "CircuitBreaker", "ResilientClient",
    "OneOf", "Optional", "Strict",
    "Policy", "load_policy",
    "stats", "StatsView", "prometheus_text", "TraceContextFilter", "current_trace", "enable_tracing",
    "disable_tracing",
]
