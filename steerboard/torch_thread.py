"""One process-wide thread for heavy torch work, so a process keeps one OpenMP thread team.

Why: torch's CPU kernels run on OpenMP (libgomp), and every OS thread that starts a parallel region gets
a thread team of its own. As soon as a process holds more OpenMP threads than it has cores -- on a 2-core
machine, any second team: the generation engine's batcher thread plus a worker thread of the judge, or
of ``asyncio.to_thread`` -- libgomp "throttles" its waits to a 100-iteration spin, so every one of the
~1,500 small kernels of a decode step pays a sleep/wake-up. Measured on the embedded model: a batch-16
decode step took 53 ms with one team and 76 ms once a second team existed, and ``base/`` through Inspect
fell from ~400 to ~280 tok/s. Running all heavy torch work on this one thread keeps a single team.

Use :func:`call` from sync code and :func:`acall` from async code; both run ``fn`` inline when already
on the torch thread (nesting never deadlocks). Long loops (the engine's decode loop) call
:func:`run_inline_jobs` between steps so short jobs submitted with ``inline=True`` (the embedding judge
scoring finished samples) do not wait for a whole continuous batch to drain. Only jobs that touch no
engine may be inline: they run while a batch holds its engine's lock and steering hooks.

GIL hand-over: torch releases the GIL around every kernel, so the torch thread asks for it back ~1,500
times a decode step. When the asyncio thread (Inspect's event loop: transcripts, logging) is running
Python, each ask waits until that thread blocks or CPython's switch interval (5 ms by default) forces a
hand-over. Starting the torch thread lowers the interval to :data:`SWITCH_INTERVAL` when it is still
CPython's default (``STEERBOARD_SWITCH_INTERVAL=0`` keeps it), so kernels overlap the event loop's work
instead of queueing behind it.

Exit: the thread is a daemon, and a daemon thread still inside a torch kernel when the interpreter finalises
is ended by ``pthread_exit`` unwinding through C++ frames, which aborts the whole process ("terminate called
without an active exception", exit 134) after everything else went right. :func:`shutdown` (run at exit, and
by the CLI before it returns its exit code) asks the thread to stop: the engine's decode loop stops at its next
:func:`run_inline_jobs`, queued jobs are cancelled, and the caller waits for the thread to end.

No library offers this: ``concurrent.futures`` executors have no way to run queued work at a safe
point inside a running job.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
SWITCH_INTERVAL = 0.0005
"""Seconds; what :func:`_ensure` sets ``sys.setswitchinterval`` to (see the module docstring)."""
_DEFAULT_SWITCH_INTERVAL = 0.005

_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None
# jobs in order; ``None`` only wakes an idle worker so it runs the inline jobs
_QUEUE: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
_INLINE: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
_STOP = threading.Event()
_AT_EXIT = False
EXIT_WAIT = 10.0
"""Seconds the exit hook waits for a job without stopping points (a model load, a fit) before leaving at once."""


class Stopped(BaseException):
    """Raised on the torch thread (at :func:`run_inline_jobs`) once :func:`shutdown` asked it to stop.

    A BaseException, so no ``except Exception`` on the way up swallows it.
    """


def _run(fn: Callable[[], Any], fut: Future[Any]) -> None:
    if not fut.set_running_or_notify_cancel():
        return
    try:
        fut.set_result(fn())
    except BaseException as ex:  # noqa: BLE001 - handed to the caller
        fut.set_exception(ex)


def _worker() -> None:
    while not _STOP.is_set():
        item = _QUEUE.get()
        if _STOP.is_set():
            if item is not None:
                item[1].set_exception(Stopped("the torch thread stopped: the process is exiting"))
            break
        try:
            run_inline_jobs()
        except Stopped:
            break
        if item is not None:
            _run(*item)
    _cancel_queued()


def _cancel_queued() -> None:
    """Fail every job still queued (their callers are gone or going: the process is exiting)."""
    for q in (_QUEUE, _INLINE):
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item[1].done():
                item[1].set_exception(Stopped("the torch thread stopped: the process is exiting"))


def shutdown(timeout: float = 10.0) -> bool:
    """Stop the torch thread and wait up to ``timeout`` seconds for it to end.

    The running job stops at its next :func:`run_inline_jobs` (the engine calls it between decode steps);
    a job without such points (a model load, a fit) runs to its end first. Returns True when no torch thread
    is left running (or none was started), False when it is still inside a job after ``timeout``: the caller
    must then leave with ``os._exit`` rather than let the interpreter finalise under it.
    """
    thread = _THREAD
    if thread is None or not thread.is_alive():
        return True
    if threading.current_thread() is thread:
        return False
    _STOP.set()
    _QUEUE.put(None)  # wakes an idle worker
    thread.join(timeout)
    if thread.is_alive():
        return False
    with _LOCK:  # a later submit (the same process going on, e.g. a test calling the CLI) starts a new one
        _STOP.clear()
    return True


def _shutdown_at_exit() -> None:
    """At interpreter exit: stop the torch thread; if it is stuck in a job, leave before finalisation can
    abort the process (stdout and stderr flushed; the exit status is lost, so 1)."""
    if shutdown(EXIT_WAIT):
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream at exit
            pass
    os._exit(1)


def _ensure() -> None:
    global _THREAD, _AT_EXIT
    with _LOCK:
        if _THREAD is None or not _THREAD.is_alive():
            raw = os.environ.get("STEERBOARD_SWITCH_INTERVAL", str(SWITCH_INTERVAL))
            try:
                want = float(raw)
            except ValueError:
                raise ValueError(f"STEERBOARD_SWITCH_INTERVAL={raw!r}: give seconds (e.g. 0.0005) or 0 to keep "
                                 "CPython's switch interval") from None
            if want > 0 and sys.getswitchinterval() == _DEFAULT_SWITCH_INTERVAL:
                sys.setswitchinterval(want)
            if not _AT_EXIT:
                import atexit

                atexit.register(_shutdown_at_exit)
                _AT_EXIT = True
            _THREAD = threading.Thread(target=_worker, name="steerboard-torch", daemon=True)
            _THREAD.start()


def on_torch_thread() -> bool:
    """Whether the caller is the torch thread."""
    return threading.current_thread() is _THREAD


def submit(fn: Callable[..., T], *args: Any, inline: bool = False, **kwargs: Any) -> Future[T]:
    """Queue ``fn(*args, **kwargs)`` on the torch thread; ``inline=True`` lets running loops run it early."""
    fut: Future[T] = Future()
    job = functools.partial(fn, *args, **kwargs)
    if on_torch_thread():
        _run(job, fut)
        return fut
    _ensure()
    if inline:
        _INLINE.put((job, fut))
        _QUEUE.put(None)  # wakes the worker if it is idle
    else:
        _QUEUE.put((job, fut))
    return fut


def call(fn: Callable[..., T], *args: Any, inline: bool = False, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on the torch thread and return its result (inline if already there)."""
    if on_torch_thread():
        return fn(*args, **kwargs)
    return submit(fn, *args, inline=inline, **kwargs).result()


async def acall(fn: Callable[..., T], *args: Any, inline: bool = False, **kwargs: Any) -> T:
    """Async :func:`call`: awaits the torch thread without blocking the event loop."""
    if on_torch_thread():
        return fn(*args, **kwargs)
    return await asyncio.wrap_future(submit(fn, *args, inline=inline, **kwargs))


def run_inline_jobs() -> int:
    """Run the queued ``inline=True`` jobs now (torch thread only; elsewhere a no-op). Returns how many.

    Raises:
        Stopped: :func:`shutdown` asked the torch thread to stop (the process is exiting).
    """
    if not on_torch_thread():
        return 0
    if _STOP.is_set():
        raise Stopped("the torch thread stopped: the process is exiting")
    n = 0
    while True:
        try:
            fn, fut = _INLINE.get_nowait()
        except queue.Empty:
            return n
        _run(fn, fut)
        n += 1
