"""Packaging: the cibuildwheel configuration and the sdist's contents."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import require_module, require_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not os.path.exists(os.path.join(ROOT, "setup.py")):  # testing an installed wheel
    pytest.skip("the source tree is not here", allow_module_level=True)


def test_cibuildwheel_builds_cpython_310_to_314_on_x86_64_and_aarch64():
    # cibuildwheel itself needs Docker or Podman to build; asking it for the build identifiers
    # validates pyproject.toml's [tool.cibuildwheel] table without either.
    exe = require_tool("cibuildwheel")
    out = subprocess.run(
        [exe, "--print-build-identifiers", "--platform", "linux"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    identifiers = set(out.stdout.split())
    expected = {
        f"cp3{minor}-manylinux_{arch}" for minor in range(10, 15) for arch in ("x86_64", "aarch64")
    }
    assert identifiers == expected


def test_sdist_carries_c_sources_stubs_and_docs_but_no_cython_output(tmp_path):
    require_module("build")
    src = tmp_path / "src"
    # copy the tree so the build leaves nothing behind in the checkout
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "wheels", "*.so", "__pycache__", ".hypothesis"),
    )
    out = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (sdist,) = (tmp_path / "dist").glob("fastnet-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert "setup.py" in names and "pyproject.toml" in names
    # every hand-written source the build needs: C, Cython (.pyx and the .pxi/.pxd it includes),
    # and the stubs users' type checkers read
    needed = {
        os.path.relpath(os.path.join(dirpath, name), ROOT)
        for top in ("src_c", "fastnet")
        for dirpath, _, files in os.walk(os.path.join(ROOT, top))
        for name in files
        if name.endswith((".c", ".h", ".pyx", ".pxi", ".pxd", ".pyi", ".py")) or name == "py.typed"
    }
    needed = {n for n in needed if not (n.startswith("fastnet/") and n.endswith(".c"))}  # Cython output
    assert "fastnet/_loop_tcp.pxi" in needed and "src_c/tftp_codec.c" in needed
    assert needed - names == set()
    generated = [n for n in names if n.startswith("fastnet/") and n.endswith(".c")]
    assert generated == []
    # the tests run from an unpacked sdist: what they read besides the code must be there too
    # (tests/test_examples_catalogue.py compares docs/examples.md with the catalogue)
    docs = {f"docs/{name}" for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")}
    assert "docs/examples.md" in docs and "docs/echo.md" in docs
    assert docs - names == set()
    assert "README.md" in names and "tests/conftest.py" in names
