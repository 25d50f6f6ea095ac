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


def _package_without_extensions(tmp_path):
    """A copy of the fastnet package as `FASTNET_NO_EXTENSIONS=1 pip install .` installs it: no
    compiled module at all.  Returns (directory to put on sys.path, environment without the variable)."""
    import shutil

    site = tmp_path / "site"
    source = os.path.dirname(os.path.abspath(fastnet.__file__))
    shutil.copytree(source, site / "fastnet", ignore=shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__"))
    env = dict(os.environ)
    env.pop("FASTNET_NO_EXTENSIONS", None)
    env["PYTHONPATH"] = str(site)
    return site, env


def test_an_install_without_extensions_runs_on_the_twins_without_warnings(tmp_path):
    # After `FASTNET_NO_EXTENSIONS=1 pip install .` every run without the variable printed one
    # "compiled module ... is unavailable" warning per module: a module that is simply not
    # installed is no news; the fallback is a debug record only.
    site, env = _package_without_extensions(tmp_path)
    out = subprocess.run([sys.executable, "-m", "fastnet", "--version"], cwd=site, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "implementation: python" in out.stdout
    assert out.stderr == ""
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(message)s')\n"
        "import fastnet\n"
        f"assert fastnet.__file__.startswith({str(site)!r}), fastnet.__file__\n"
        "from fastnet.tftp import codec\n"
        "print('IMPL', codec.IMPLEMENTATION)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=site, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IMPL python" in out.stdout
    assert "DEBUG fastnet: compiled module fastnet.tftp._codec_c is not installed; using its pure-Python twin" in out.stderr
    assert "WARNING" not in out.stderr


def test_a_compiled_module_that_is_there_but_broken_still_warns(tmp_path):
    # the quiet fallback is for an absent module only: a broken build must still be heard of
    import sysconfig

    site, env = _package_without_extensions(tmp_path)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    (site / "fastnet" / "tftp" / f"_codec_c{suffix}").write_bytes(b"not a shared object")
    out = subprocess.run([sys.executable, "-m", "fastnet", "--version"], cwd=site, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "tftp.codec=python" in out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr  # the broken module, and no word about the absent ones
    assert lines[0].startswith("fastnet: compiled module fastnet.tftp._codec_c is unavailable (")


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
