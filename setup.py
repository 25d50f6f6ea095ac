"""Build fastnet's C hot paths.

Environment switches (all optional):

FASTNET_NO_EXTENSIONS=1    build no extension: the pure-Python twins are used
FASTNET_DEBUG=1            -O0 -g3, C asserts on, Cython line tracing off
FASTNET_SANITIZE=LIST      e.g. "address,undefined": build with -fsanitize=LIST
                           (run with LD_PRELOAD=$(gcc -print-file-name=libasan.so))
FASTNET_CYTHON_ANNOTATE=1  write Cython's HTML annotation next to each .pyx
FASTNET_BUILD_ONLY=NAMES   comma-separated extension names to build (default: all), for rebuilding
                           one hot path during development:
                           FASTNET_BUILD_ONLY=fastnet._loop_c python setup.py build_ext --inplace
"""

import glob
import os
import sys

from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("FASTNET_NO_EXTENSIONS") or not sys.platform.startswith("linux")
DEBUG = _flag("FASTNET_DEBUG")
SANITIZE = os.environ.get("FASTNET_SANITIZE", "")
ANNOTATE = _flag("FASTNET_CYTHON_ANNOTATE")
BUILD_ONLY = {n.strip() for n in os.environ.get("FASTNET_BUILD_ONLY", "").split(",") if n.strip()}

# module name -> (Cython source, prefix of the hand-written C files in src_c/ it links)
EXTENSIONS = {
    "fastnet.tftp._codec_c": ("fastnet/tftp/_codec_c.pyx", "tftp_codec"),
    "fastnet.tftp._engine_c": ("fastnet/tftp/_engine_c.pyx", "tftp_engine"),
    "fastnet._loop_c": ("fastnet/_loop_c.pyx", "loop"),
    "fastnet._relay_c": ("fastnet/_relay_c.pyx", "relay"),
    "fastnet.bench._loadgen_c": ("fastnet/bench/_loadgen_c.pyx", "loadgen"),
}


def _extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    compile_args = ["-std=gnu11", "-Wall", "-Wno-unused-function", "-fno-strict-aliasing"]
    link_args = []
    macros = [("_GNU_SOURCE", "1")]
    if DEBUG:
        compile_args += ["-O0", "-g3", "-UNDEBUG"]
    else:
        compile_args += ["-O2"]
        macros.append(("NDEBUG", "1"))
    if SANITIZE:
        compile_args += ["-fsanitize=" + SANITIZE, "-fno-omit-frame-pointer", "-g"]
        link_args += ["-fsanitize=" + SANITIZE]

    exts = []
    for name, (pyx, prefix) in EXTENSIONS.items():
        if BUILD_ONLY and name not in BUILD_ONLY:
            continue
        if not os.path.exists(pyx):
            continue  # a hot path not written yet: its twin serves alone
        sources = [pyx] + sorted(glob.glob(f"src_c/{prefix}*.c"))
        exts.append(
            Extension(
                name,
                sources,
                include_dirs=["src_c"],
                define_macros=macros,
                extra_compile_args=compile_args,
                extra_link_args=link_args,
            )
        )
    return cythonize(
        exts,
        include_path=["fastnet/includes", "fastnet"],
        annotate=ANNOTATE,
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
        },
    )


setup(ext_modules=_extensions())
