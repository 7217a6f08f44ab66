"""Locations of the C library, header and pkg-config file shipped inside the package.

setup.py's build_ext puts them next to this file:

    hms_ffi_native/lib/libhms_ffi.so
    hms_ffi_native/lib/pkgconfig/hms_ffi.pc
    hms_ffi_native/include/hms_ffi/hms_ffi.h

Each function returns an absolute Path and raises FileNotFoundError (saying how to build them) when
the file is missing, e.g. in a source checkout that has not run ``python setup.py build_ext --inplace``.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["package_dir", "libdir", "includedir", "pkgconfig_dir", "library_path", "header_path"]

_PKG = Path(__file__).resolve().parent
_HINT = (
    "it is built by the package's build step: run `pip install .` (or `pip install -e .`), "
    "or `python setup.py build_ext --inplace` in a source checkout"
)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"hms_ffi_native: {what} not found at {path}; {_HINT}")
    return path


def package_dir() -> Path:
    """The installed hms_ffi_native package directory."""
    return _PKG


def libdir() -> Path:
    """Directory holding libhms_ffi.so (use with -L and -Wl,-rpath)."""
    return _require(_PKG / "lib", "the library directory")


def includedir() -> Path:
    """Directory to pass with -I; it contains hms_ffi/hms_ffi.h."""
    inc = _PKG / "include"
    _require(inc / "hms_ffi" / "hms_ffi.h", "the C header hms_ffi/hms_ffi.h")
    return inc


def header_path() -> Path:
    """The public header hms_ffi/hms_ffi.h."""
    return _require(_PKG / "include" / "hms_ffi" / "hms_ffi.h", "the C header hms_ffi/hms_ffi.h")


def pkgconfig_dir() -> Path:
    """Directory holding hms_ffi.pc (add to PKG_CONFIG_PATH)."""
    pc = _PKG / "lib" / "pkgconfig"
    _require(pc / "hms_ffi.pc", "the pkg-config file hms_ffi.pc")
    return pc


def library_path() -> Path:
    """The shared library libhms_ffi.so."""
    return _require(_PKG / "lib" / "libhms_ffi.so", "the shared library libhms_ffi.so")
