#!/usr/bin/env bash
# Regenerates the code of examples/orders/proto/*.proto (commit the result):
#   Python -> hms_ffi_native/_orders/{order,oms_integration}_pb2.py  (shipped in the wheel: the demo's OMS uses it)
#   Go     -> examples/orders/go/orderpb/*.pb.go
# Needs: python with grpcio-tools (its protoc and the well-known types; pinned below; PYTHON=... picks
# the interpreter),
# Go (protoc-gen-go is installed at the pinned version below if it is not on PATH or in GOPATH/bin).
# tests/test_orders.py fails when the committed code no longer matches the .proto files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
protoc_gen_go_version="v1.36.12"

# The Python code must run on protobuf 6 and 7 (Python 3.9 has no protobuf 7): generate it with the
# protoc of grpcio-tools 1.74 (gencode 6.31.1). A newer protoc would demand a newer runtime.
grpcio_tools_version="1.74.0"
have="$("$python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$have" != "$grpcio_tools_version" ] && [ -z "${GEN_ANY_GRPCIO_TOOLS:-}" ]; then
  echo "gen.sh: needs grpcio-tools==$grpcio_tools_version (found '${have:-none}'); e.g." >&2
  echo "  python3 -m venv /tmp/venv-gen && /tmp/venv-gen/bin/pip install grpcio-tools==$grpcio_tools_version" >&2
  echo "  PYTHON=/tmp/venv-gen/bin/python $0" >&2
  exit 1
fi
wkt="$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

py_out="$root/hms_ffi_native/_orders"
"$python" -m grpc_tools.protoc -I "$here/proto" -I "$wkt" --python_out="$py_out" \
  "$here/proto/order.proto" "$here/proto/oms_integration.proto"
# protoc writes `import order_pb2`, a top-level import; inside the package it must be relative.
sed -i 's/^import order_pb2 as order__pb2$/from . import order_pb2 as order__pb2/' "$py_out/oms_integration_pb2.py"

gobin="$(go env GOPATH)/bin"
plugin="$(command -v protoc-gen-go || true)"
[ -n "$plugin" ] || plugin="$gobin/protoc-gen-go"
if [ ! -x "$plugin" ] || ! "$plugin" --version | grep -q "${protoc_gen_go_version#v}"; then
  GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$protoc_gen_go_version"
  plugin="$gobin/protoc-gen-go"
fi
"$python" -m grpc_tools.protoc -I "$here/proto" -I "$wkt" --plugin=protoc-gen-go="$plugin" \
  --go_out="$here/go/orderpb" --go_opt=paths=source_relative \
  "$here/proto/order.proto" "$here/proto/oms_integration.proto"
echo "generated: $py_out/{order,oms_integration}_pb2.py, $here/go/orderpb/{order,oms_integration}.pb.go"
