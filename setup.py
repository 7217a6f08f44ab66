"""Build script for hms-ffi-native.

Static metadata lives in pyproject.toml; this file adds what needs code:

* the version, read from include/hms_ffi/hms_ffi.h (HMS_FFI_VERSION_MAJOR/MINOR/PATCH) -- the
  only place it is written down;
* the cffi extension ``hms_ffi_native._native`` (hms_ffi_native/_build/build_cffi.py);
* a build_ext that also ships the C library for non-Python users:
    hms_ffi_native/lib/libhms_ffi.so
    hms_ffi_native/lib/pkgconfig/hms_ffi.pc   (relocatable, uses ${pcfiledir})
    hms_ffi_native/include/hms_ffi/hms_ffi.h

Development:  python setup.py build_ext --inplace   (or: pip install -e .)
Install:      pip install .
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext as _setuptools_build_ext

ROOT = Path(__file__).resolve().parent
HEADER_REL = os.path.join("include", "hms_ffi", "hms_ffi.h")
PACKAGE = "hms_ffi_native"

# Flags for libhms_ffi.so; keep in step with build_cffi.py's set_source().
LIB_CFLAGS = [
    "-shared", "-fPIC", "-O2", "-fvisibility=hidden",
    "-DHMS_FFI_BUILDING=1", "-D_GNU_SOURCE", "-std=gnu11", "-pthread",
]
LIB_LDFLAGS = ["-Wl,-soname,libhms_ffi.so"]


def read_version(header: Path = ROOT / HEADER_REL) -> str:
    text = header.read_text(encoding="utf-8")
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"^[ \t]*#[ \t]*define[ \t]+HMS_FFI_VERSION_{part}[ \t]+([0-9]+)\b", text, re.M)
        if not m:
            raise RuntimeError(f"HMS_FFI_VERSION_{part} not found in {header}")
        parts.append(m.group(1))
    return ".".join(parts)


VERSION = read_version()

PC_TEMPLATE = """\
# Relocatable: every path is derived from the location of this file.
prefix=${{pcfiledir}}/../..
libdir=${{pcfiledir}}/..
includedir=${{prefix}}/include

Name: hms_ffi
Description: Cross-process calls over shared memory (hms-ffi-native C ABI)
Version: {version}
Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lhms_ffi -pthread
Cflags: -I${{includedir}}
"""


def _is_rpath_flag(arg: str) -> bool:
    return arg.startswith(("-Wl,-rpath", "-Wl,--rpath", "-Wl,-R", "-R"))


class build_ext(_setuptools_build_ext):
    """build_ext + the standalone C library, its header and its pkg-config file.

    Passed in ``cmdclass``; cffi's setuptools integration then subclasses it (it wraps whatever
    ``cmdclass['build_ext']`` holds) to generate _native.c before this run() is called.
    """

    # (path relative to the package dir) of every extra file we produce
    _EXTRA = (
        os.path.join("lib", "libhms_ffi.so"),
        os.path.join("lib", "pkgconfig", "hms_ffi.pc"),
        os.path.join("include", "hms_ffi", "hms_ffi.h"),
    )

    def build_extensions(self):
        # Some interpreters (pyenv, a few distribution builds) put `-Wl,-rpath,<their own lib dir>` in
        # LDSHARED, which would leave a RUNPATH naming the build machine in _native.abi3.so (auditwheel
        # keeps it). The extension links libc only and needs no RPATH: drop every rpath flag.
        linker = getattr(self.compiler, "linker_so", None)
        if linker:
            self.compiler.linker_so = [a for a in linker if not _is_rpath_flag(a)]
        super().build_extensions()

    def run(self):
        super().run()  # the cffi extension (and the --inplace copy of it)
        built = self._build_c_library()
        targets = [os.path.join(self.build_lib, PACKAGE)]
        if self.inplace:
            build_py = self.get_finalized_command("build_py")
            targets.append(build_py.get_package_dir(PACKAGE) or PACKAGE)
        for pkg_dir in targets:
            self._install_extras(pkg_dir, built)

    # -- libhms_ffi.so -----------------------------------------------------------------------------
    def _build_c_library(self) -> str:
        sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.c"))
        if not sources:
            raise RuntimeError("no C sources found in csrc/")
        deps = sources + [HEADER_REL] + sorted(
            str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.h")
        )
        out = os.path.join(self.build_temp, "libhms_ffi.so")
        if not self.force and os.path.exists(out):
            mtime = os.path.getmtime(out)
            if all(os.path.getmtime(ROOT / d) <= mtime for d in deps):
                print(f"libhms_ffi.so is up to date ({out})")
                return out
        os.makedirs(self.build_temp, exist_ok=True)
        cc = shlex.split(os.environ.get("CC") or "cc")
        cmd = [
            *cc, *LIB_CFLAGS,
            *shlex.split(os.environ.get("CFLAGS", "")),
            "-I" + str(ROOT / "include"), "-I" + str(ROOT / "csrc"),
            *[str(ROOT / s) for s in sources],
            "-o", out,
            *LIB_LDFLAGS,
            *shlex.split(os.environ.get("LDFLAGS", "")),
        ]
        print(shlex.join(cmd))
        try:
            subprocess.run(cmd, check=True)
        except FileNotFoundError as exc:
            raise RuntimeError(f"C compiler {cc[0]!r} not found (install gcc/clang or set CC)") from exc
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"building libhms_ffi.so failed (exit {exc.returncode})") from exc
        return out

    # -- copies into a package directory (build_lib and/or the source tree) ------------------------
    def _install_extras(self, pkg_dir: str, built_lib: str) -> None:
        lib_dir = os.path.join(pkg_dir, "lib")
        pc_dir = os.path.join(lib_dir, "pkgconfig")
        inc_dir = os.path.join(pkg_dir, "include", "hms_ffi")
        for d in (lib_dir, pc_dir, inc_dir):
            self.mkpath(d)
        self.copy_file(built_lib, os.path.join(lib_dir, "libhms_ffi.so"))
        self.copy_file(str(ROOT / HEADER_REL), os.path.join(inc_dir, "hms_ffi.h"))
        pc_path = os.path.join(pc_dir, "hms_ffi.pc")
        content = PC_TEMPLATE.format(version=VERSION)
        if not (os.path.exists(pc_path) and Path(pc_path).read_text() == content):
            print(f"writing {pc_path}")
            if not self.dry_run:
                Path(pc_path).write_text(content)

    # -- so install --record / editable installs know about the extra files ------------------------
    def get_outputs(self):
        outputs = list(super().get_outputs())
        outputs += [os.path.join(self.build_lib, PACKAGE, rel) for rel in self._EXTRA]
        return sorted(set(outputs))

    def _get_output_mapping(self):
        yield from super()._get_output_mapping()
        if self.inplace:
            build_py = self.get_finalized_command("build_py")
            pkg_dir = build_py.get_package_dir(PACKAGE) or PACKAGE
            for rel in self._EXTRA:
                yield (os.path.join(self.build_lib, PACKAGE, rel), os.path.join(pkg_dir, rel))


setup(
    version=VERSION,
    cffi_modules=["hms_ffi_native/_build/build_cffi.py:ffibuilder"],
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
