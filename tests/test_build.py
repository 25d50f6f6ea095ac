"""The package as built: compiled modules present on a normal install, twins selectable."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import fastnet
from fastnet import _compat

COMPILED = ["fastnet.tftp._codec_c", "fastnet.tftp._engine_c", "fastnet._loop_c", "fastnet._relay_c", "fastnet.bench._loadgen_c"]


@pytest.mark.skipif(_compat.NO_EXTENSIONS, reason="FASTNET_NO_EXTENSIONS=1 asks for no compiled module")
@pytest.mark.parametrize("name", COMPILED)
def test_normal_install_loaded_compiled_module(name):
    # Fails when `pip install .` silently produced a pure-Python package.
    module = importlib.import_module(name)
    assert module.__file__.endswith((".so", ".pyd")), module.__file__


def test_implementation_follows_activate(implementation):
    from fastnet.tftp import codec

    assert codec.IMPLEMENTATION == implementation
    assert fastnet.IMPLEMENTATION == implementation


def test_version_command_names_implementation(impl_env, implementation):
    out = subprocess.run(
        [sys.executable, "-m", "fastnet", "--version"], env=impl_env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"fastnet {fastnet.__version__} ")
    assert f"implementation: {implementation}" in out.stdout
    assert f"tftp.codec={implementation}" in out.stdout


def test_failed_compiled_import_falls_back_with_warning():
    # A compiled module that cannot be imported (here: shadowed by a broken one) must not break
    # fastnet: the selector takes the twin and logs a warning.
    code = (
        "import logging, sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'fastnet.tftp._codec_c':\n"
        "            raise ImportError('simulated broken build')\n"
        "sys.meta_path.insert(0, Block())\n"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')\n"
        "from fastnet.tftp import codec\n"
        "print('IMPL', codec.IMPLEMENTATION)\n"
        "print('ACK', codec.encode_ack(7).hex())\n"
    )
    env = dict(os.environ)
    env.pop("FASTNET_NO_EXTENSIONS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IMPL python" in out.stdout
    assert "ACK 00040007" in out.stdout
    assert "WARNING fastnet: compiled module fastnet.tftp._codec_c is unavailable" in out.stderr


@pytest.mark.skipif(_compat.NO_EXTENSIONS, reason="FASTNET_NO_EXTENSIONS=1 asks for no compiled module")
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_module_needs_no_glibc_newer_than_2_17(name):
    """manylinux2014 (glibc 2.17) is the wheels' floor: a newer symbol version raises it.

    A build on a newer system binds some calls to new versions (fstat is GLIBC_2.33 since glibc
    2.33, for one); the C sources avoid those, and auditwheel would otherwise tag the wheel
    manylinux_2_33 or later, which older systems' pip refuses."""
    import re
    import shutil

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc symbol versions are a Linux matter")
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    path = importlib.import_module(name).__file__
    symbols = subprocess.run([objdump, "-T", path], capture_output=True, text=True, check=True).stdout
    too_new = sorted(
        {line.split()[-1] + " " + version for line in symbols.splitlines()
         for version in re.findall(r"GLIBC_(2\.\d+)", line) if tuple(map(int, version.split("."))) > (2, 17)}
    )
    assert too_new == [], f"{name} needs glibc symbols newer than 2.17: {too_new}"
