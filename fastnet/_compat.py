"""Choosing between a compiled module and its pure-Python twin.

Every dual module of fastnet is a thin *selector* (``fastnet.tftp.codec``, ``fastnet.loop`` ...)
that calls :func:`bind` once at import time.  The selector's public names are then taken from the
compiled module (``*_c``) or from the twin (``*_py``), and the selector's ``IMPLEMENTATION`` says
which one, ``"c"`` or ``"python"``.

``FASTNET_NO_EXTENSIONS=1`` in the environment selects the twins, at build time (``setup.py``
builds no extension) and at run time (here).  A compiled module that is not installed (an install
built without extensions) falls back to its twin quietly (a debug log record); one that is there
but fails to import falls back with a logged warning.

Code inside fastnet refers to a dual module's names through the selector module
(``codec.decode(...)``, not ``from .codec import decode``), so that :func:`activate` -- used by the
test suite to run every test against both implementations in one process -- reaches it too.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import ModuleType

__all__ = ["NO_EXTENSIONS", "bind", "activate", "active", "overall", "c_available", "implementations"]

log = logging.getLogger("fastnet")


def _env_no_extensions() -> bool:
    return os.environ.get("FASTNET_NO_EXTENSIONS", "") not in ("", "0")


#: True when FASTNET_NO_EXTENSIONS asked for the pure-Python twins.
NO_EXTENSIONS: bool = _env_no_extensions()

_mode = "python" if NO_EXTENSIONS else "c"

# selector module name -> (compiled module name, twin module name, exported names)
_selectors: dict[str, tuple[str, str, tuple[str, ...]]] = {}
# compiled module name -> the ImportError that made us fall back (None: loaded fine)
_c_failures: dict[str, BaseException | None] = {}


def _load_c(c_name: str) -> ModuleType | None:
    if c_name in _c_failures and _c_failures[c_name] is not None:
        return None
    try:
        module = importlib.import_module(c_name)
    except ImportError as exc:
        _c_failures[c_name] = exc
        if isinstance(exc, ModuleNotFoundError) and exc.name == c_name:
            # Simply not there: an install built without extensions (FASTNET_NO_EXTENSIONS=1
            # pip install ., no compiler).  The twin is the package as installed: no warning.
            log.debug("fastnet: compiled module %s is not installed; using its pure-Python twin", c_name)
        else:
            # There but broken (a bad build, a missing symbol or library): worth a warning.
            log.warning(
                "fastnet: compiled module %s is unavailable (%s); using its pure-Python twin",
                c_name,
                exc,
            )
        return None
    _c_failures[c_name] = None
    return module


def _apply(selector: ModuleType, c_name: str, py_name: str, names: tuple[str, ...], mode: str) -> str:
    backend = _load_c(c_name) if mode == "c" else None
    impl = "c"
    if backend is None:
        backend = importlib.import_module(py_name)
        impl = "python"
    namespace = vars(selector)
    for name in names:
        namespace[name] = getattr(backend, name)
    namespace["IMPLEMENTATION"] = impl
    namespace["_backend"] = backend
    return impl


def bind(selector_name: str, c_name: str, py_name: str, names) -> str:
    """Fill the selector module *selector_name* with *names* from the chosen backend.

    Returns ``"c"`` or ``"python"``: the implementation actually loaded.
    """
    names = tuple(names)
    _selectors[selector_name] = (c_name, py_name, names)
    return _apply(sys.modules[selector_name], c_name, py_name, names, _mode)


def active() -> str:
    """The implementation fastnet is asked to use: ``"c"`` or ``"python"``."""
    return _mode


def activate(mode: str) -> str:
    """Re-bind every selector to *mode* (``"c"`` or ``"python"``); return the previous mode.

    For the test suite and benchmarks, which run both implementations in one process.
    Modules imported later follow the new mode too.
    """
    global _mode
    if mode not in ("c", "python"):
        raise ValueError(f"implementation must be 'c' or 'python', not {mode!r}")
    previous = _mode
    _mode = mode
    for selector_name, (c_name, py_name, names) in _selectors.items():
        selector = sys.modules.get(selector_name)
        if selector is not None:
            _apply(selector, c_name, py_name, names, mode)
    return previous


def c_available(c_name: str) -> bool:
    """Whether the compiled module *c_name* imports (never true under FASTNET_NO_EXTENSIONS)."""
    if NO_EXTENSIONS:
        return False
    return _load_c(c_name) is not None


# every dual module of fastnet, imported by overall() so that it can answer for all of them
DUAL_MODULES = ("fastnet.tftp.codec", "fastnet.tftp.engine", "fastnet.loop", "fastnet.relay", "fastnet.bench.loadgen")


def overall() -> str:
    """``"c"`` when every dual module runs compiled code, else ``"python"``."""
    for name in DUAL_MODULES:
        importlib.import_module(name)
    if _mode == "python":
        return "python"
    return "c" if all(impl == "c" for impl in implementations().values()) else "python"


def implementations() -> dict[str, str]:
    """Selector module name -> implementation it currently uses."""
    return {name: getattr(sys.modules[name], "IMPLEMENTATION", "?") for name in _selectors if name in sys.modules}
