# Compiled callback handles for fastnet.Loop.call_soon (included by _loop_c.pyx).
#
# asyncio's Handle is a Python class: building one is a Python __init__ per call_soon, and every
# task wake-up is a call_soon.  This one has the same attributes and methods (cancel, cancelled,
# get_context, _run, _callback, _args, _cancelled ...), like uvloop's Handle; in debug mode the loop
# keeps asyncio's own Handle, for its creation tracebacks.

from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit

cdef object _format_callback_source = asyncio.format_helpers._format_callback_source


@cython.freelist(256)
cdef class Handle:
    cdef public object _callback
    cdef public object _args
    cdef public bint _cancelled
    cdef public object _loop
    cdef public object _context
    cdef public object _repr
    cdef public object _source_traceback
    cdef object __weakref__

    def __init__(self, callback, args, loop, context=None):
        if context is None:
            context = PyContext_CopyCurrent()
        self._context = context
        self._loop = loop
        self._callback = callback
        self._args = args

    def __repr__(self):
        if self._repr is not None:
            return self._repr
        info = [self.__class__.__name__]
        if self._cancelled:
            info.append("cancelled")
        if self._callback is not None:
            info.append(_format_callback_source(self._callback, self._args))
        return "<{}>".format(" ".join(info))

    def cancel(self):
        if not self._cancelled:
            self._cancelled = True
            self._callback = None
            self._args = None

    def cancelled(self):
        return self._cancelled

    def get_context(self):
        return self._context

    def _run(self):
        self.run_c()

    cdef int run_c(self) except -1:
        cdef object callback = self._callback
        cdef object args = self._args
        cdef object context = self._context
        cdef object error = None
        try:
            PyContext_Enter(context)   # fails for a context already entered: asyncio reports that
        except BaseException as exc:
            error = exc
        else:
            try:
                if args:
                    callback(*args)
                else:
                    callback()
            except BaseException as exc:
                error = exc
            finally:
                PyContext_Exit(context)
        if error is not None:
            # outside the callback's context: Python 3.13's call_exception_handler enters it itself
            if isinstance(error, (SystemExit, KeyboardInterrupt)):
                raise error
            self._loop.call_exception_handler({
                "message": f"Exception in callback {_format_callback_source(callback, args)}",
                "exception": error,
                "handle": self,
            })
        return 0


cdef inline Handle _new_handle(object callback, tuple args, object loop, object context):
    cdef Handle h = Handle.__new__(Handle)
    if context is None:
        context = PyContext_CopyCurrent()
    h._context = context
    h._loop = loop
    h._callback = callback
    h._args = args
    return h


@cython.freelist(64)
@cython.final
cdef class TimerHandle(Handle):
    """call_later/call_at's handle: ordered by its deadline in the loop's heap (compared in C)."""
    cdef public double _when
    cdef public bint _scheduled

    def __init__(self, when, callback, args, loop, context=None):
        Handle.__init__(self, callback, args, loop, context)
        self._when = when

    def __repr__(self):
        if self._repr is not None:
            return self._repr
        info = [self.__class__.__name__]
        if self._cancelled:
            info.append("cancelled")
        info.append(f"when={self._when}")
        if self._callback is not None:
            info.append(_format_callback_source(self._callback, self._args))
        return "<{}>".format(" ".join(info))

    def __hash__(self):
        return hash(self._when)

    def __richcmp__(self, other, int op):
        cdef double a = self._when, b
        if not hasattr(other, "_when") or not hasattr(other, "_callback"):
            return NotImplemented
        b = other._when
        if op == 0:
            return a < b
        if op == 1:
            return a <= b or self == other
        if op == 4:
            return a > b
        if op == 5:
            return a >= b or self == other
        same = (a == b and self._callback == other._callback and self._args == other._args
                and self._cancelled == other._cancelled)
        return same if op == 2 else not same

    def when(self):
        return self._when

    def cancel(self):
        if not self._cancelled:
            self._loop._timer_handle_cancelled(self)
            Handle.cancel(self)


cdef inline TimerHandle _new_timer(double when, object callback, tuple args, object loop, object context):
    cdef TimerHandle h = TimerHandle.__new__(TimerHandle)
    if context is None:
        context = PyContext_CopyCurrent()
    h._context = context
    h._loop = loop
    h._callback = callback
    h._args = args
    h._when = when
    return h
