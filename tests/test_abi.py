"""The header, the library and the bindings agree: versions, status codes, exported symbols, sizes."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

import hms_ffi_native as hms
from hms_ffi_native import _paths
from hms_ffi_native._native import ffi, lib

from conftest import child_env

GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


def header_text() -> str:
    return _paths.header_path().read_text()


def header_functions() -> list:
    return re.findall(r"^HMS_API\s+[\w\s\*]+?\**\s*(hms_\w+)\s*\(", header_text(), re.M)


def test_abi_version_of_library_matches_header():
    m = re.search(r"#define HMS_FFI_ABI_VERSION (\d+)", header_text())
    assert lib.hms_abi_version() == int(m.group(1)) == lib.HMS_FFI_ABI_VERSION == hms.ABI_VERSION


def test_version_has_one_source():
    parts = [re.search(rf"#define HMS_FFI_VERSION_{p} (\d+)", header_text()).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
    assert hms.__version__ == ".".join(parts)
    try:
        from importlib.metadata import version

        assert version("hms-ffi-native") == hms.__version__
    except Exception:
        pytest.skip("package metadata not installed (in-place build)")


def test_status_codes_are_grpc_values_and_named():
    for name, value in GRPC_CODES.items():
        assert getattr(lib, f"HMS_{name}") == value
        assert ffi.string(lib.hms_status_str(value)).decode() == name
        assert hms.STATUS_NAMES[value] == name
        if value:
            assert hms.error_for(value, "m").code == value
    assert ffi.string(lib.hms_status_str(17)).decode() == "UNRECOGNIZED_STATUS"
    assert ffi.string(lib.hms_status_str(-5)).decode() == "UNRECOGNIZED_STATUS"
    assert isinstance(hms.error_for(99, "x"), hms.Unknown)


def test_struct_sizes_agree_with_library():
    assert ffi.sizeof("hms_error_t") == lib.hms_sizeof_error()
    assert ffi.sizeof("hms_payload_t") == lib.hms_sizeof_payload()
    assert ffi.sizeof("hms_node_options_t") == lib.hms_sizeof_node_options()
    assert ffi.sizeof("hms_connect_options_t") == lib.hms_sizeof_connect_options()
    # options structs start with their version and keep reserved space for later fields
    assert ffi.offsetof("hms_node_options_t", "version") == 0
    assert ffi.offsetof("hms_connect_options_t", "version") == 0


def test_every_header_function_is_bound():
    names = header_functions()
    assert len(names) > 30
    for n in names:
        assert hasattr(lib, n), n


def test_cdef_is_generated_from_header():
    from hms_ffi_native._build.build_cffi import generate_cdef

    cdef = generate_cdef(_paths.header_path())
    import cffi

    cffi.FFI().cdef(cdef)  # parses
    for n in header_functions():
        assert re.search(rf"\b{n}\s*\(", cdef), n
    assert "#define HMS_FFI_ABI_VERSION ..." in cdef


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) is not installed")
def test_shipped_library_exports_only_the_api():
    out = subprocess.run(["nm", "-D", "--defined-only", str(_paths.library_path())], capture_output=True,
                         text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    exported = {s for s in exported if not s.startswith(("_init", "_fini", "_edata", "_end", "__bss_start"))}
    assert exported == set(header_functions())


def test_cli_paths_and_pkg_config(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "hms_ffi_native", *args], capture_output=True, text=True,
                              env=child_env(), check=True).stdout.strip()

    libdir, incdir, pcdir = run("--libdir"), run("--includedir"), run("--pkgconfig-dir")
    assert (_paths.libdir() / "libhms_ffi.so").exists() and libdir == str(_paths.libdir())
    assert incdir == str(_paths.includedir())
    assert "hms-ffi-native" in run("--version")
    if shutil.which("pkg-config") is None or shutil.which("cc") is None:
        pytest.skip("pkg-config or cc not installed")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "hms_ffi"], capture_output=True, text=True,
                           check=True, env=child_env(PKG_CONFIG_PATH=pcdir)).stdout.split()
    src = tmp_path / "v.c"
    src.write_text('#include <stdio.h>\n#include <hms_ffi/hms_ffi.h>\n'
                   'int main(void){ if (hms_abi_version() != HMS_FFI_ABI_VERSION) return 1;'
                   ' printf("%s %s\\n", hms_version_string(), hms_status_str(HMS_NOT_FOUND)); return 0; }\n')
    exe = tmp_path / "v"
    subprocess.run(["cc", str(src), "-o", str(exe), *flags], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == f"{hms.__version__} NOT_FOUND"
