"""Server processes of the test bed: started in their own process group, always reaped.

Every server (etcd, kube-apiserver, Prometheus, ...) is a :class:`ServerProcess`. It runs in
a new session (so its whole process group can be signalled), logs to a file whose tail is
put into every start error, and is registered in a module-level registry until stopped.
The registry is what makes teardown reliable when a test run ends badly:

- normal exit, an exception, Ctrl-C: the fixtures' ``finally`` blocks stop their servers,
  and an :mod:`atexit` hook stops whatever is left;
- SIGTERM or SIGHUP (a CI timeout, a closed terminal): a handler stops everything, then
  re-delivers the signal with its default action so the exit status stays honest;
- SIGKILL of the Python process: nothing in Python can run, so on Linux each server
  started from the main thread gets ``PR_SET_PDEATHSIG`` and the kernel kills it when its
  parent dies (servers started from other threads rely on the first two only).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TypeVar

T = TypeVar("T")

__all__ = [
    "ServerProcess",
    "TestbedError",
    "keep_workdirs",
    "register_cleanup",
    "remove_tree",
    "unregister_cleanup",
    "wait_until",
]


class TestbedError(RuntimeError):
    """A test-bed server could not start or misbehaved; the message carries its log tail."""

    __test__ = False  # not a pytest test class, despite the name


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None or False; return that.

    Raises :class:`TestbedError` naming ``what`` (and whatever ``on_timeout`` returns, such
    as a log tail) when ``timeout`` seconds pass first. Exceptions raised by ``probe``
    propagate: a probe that can fail transiently must catch its own errors.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout is not None else ""
            raise TestbedError(f"timed out after {timeout:g} s waiting for {what}\n{detail}")
        time.sleep(interval)


_registry: dict[int, Callable[[], None]] = {}
_registry_lock = threading.RLock()
_hooks_installed = False
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def register_cleanup(owner: object, cleanup: Callable[[], None]) -> None:
    """Make sure ``cleanup()`` runs at interpreter exit or on SIGTERM/SIGHUP, unless
    :func:`unregister_cleanup` is called for ``owner`` first."""
    _install_hooks()
    with _registry_lock:
        _registry[id(owner)] = cleanup


def unregister_cleanup(owner: object) -> None:
    with _registry_lock:
        _registry.pop(id(owner), None)


def _stop_all() -> None:
    with _registry_lock:
        cleanups = list(_registry.values())
    for cleanup in reversed(cleanups):  # newest first: dependants before what they depend on
        with contextlib.suppress(Exception):
            cleanup()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    global _hooks_installed  # noqa: PLW0603 - one process-wide installation
    with _registry_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still runs
    for signum in _HANDLED_SIGNALS:
        # Leave a handler that someone else installed (uvicorn, kopf, a test runner) alone.
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, _on_signal)


_PR_SET_PDEATHSIG = 1
# Resolved here, in the parent: between fork and exec the child must not load libraries.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _may_die_with_parent() -> bool:
    # The kernel's "parent" is the forking *thread*: a server started from a worker thread
    # would be killed when that thread ends, so only the main thread asks for it.
    return _prctl is not None and threading.current_thread() is threading.main_thread()


KEEP_ENV = "MODELROLLOUT_KEEP_TESTBED"


def keep_workdirs() -> bool:
    """True when MODELROLLOUT_KEEP_TESTBED=1: keep temporary work directories (logs, data)
    after the servers stop, to read them after a failure. Processes are stopped anyway."""
    return os.environ.get(KEEP_ENV) == "1"


def remove_tree(path: Path) -> None:
    """Remove a directory tree, ignoring that it may already be gone."""
    shutil.rmtree(path, ignore_errors=True)


class ServerProcess:
    """One long-running server process, logged to ``log_path``, stopped by process group.

    ``stop()`` is idempotent and always reaps the process (no zombie, no ResourceWarning).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"ServerProcess({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        if self._popen is not None:
            raise TestbedError(f"{self.name} is already started (pid {self.pid})")
        executable = Path(self.argv[0])
        if not executable.is_file() or not os.access(executable, os.X_OK):
            raise TestbedError(
                f"{self.name}: no executable at {executable}; run `make setup` "
                "(hack/setup.sh builds and installs the test bed's binaries)"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if _may_die_with_parent() else None,  # noqa: PLW1509
            )
        except OSError as exc:
            self._log.close()
            self._log = None
            raise TestbedError(f"{self.name}: cannot execute {self.argv[0]}: {exc}") from exc
        register_cleanup(self, self.stop)

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server's combined stdout and stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> TestbedError:
        """A :class:`TestbedError` for ``what`` with the exit status and the log tail."""
        status = self.returncode()
        state = "running" if status is None else f"exited with status {status}"
        return TestbedError(
            f"{self.name} {what} ({state}; log {self.log_path}):\n"
            f"{self.argv[0]} {' '.join(self.argv[1:])}\n"
            f"--- last lines of the log ---\n{self.log_tail()}"
        )

    def check_running(self) -> None:
        """Raise with the log tail if the process has exited."""
        if self._popen is not None and self._popen.poll() is not None:
            raise self.failure("exited unexpectedly")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s, reap, close the log."""
        popen = self._popen
        if popen is not None:
            if popen.poll() is None:
                _signal_group(popen.pid, signal.SIGTERM)
                try:
                    popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(popen.pid, signal.SIGKILL)
                    popen.wait()
            # The leader is gone; kill anything it left in its group.
            _signal_group(popen.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        unregister_cleanup(self)

    def kill(self) -> None:
        """SIGKILL the process group at once (no cleanup at all, as when a node dies) and reap
        it. :meth:`stop` afterwards still closes the log and unregisters."""
        popen = self._popen
        if popen is not None and popen.poll() is None:
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait()

    def reset(self) -> None:
        """Forget a stopped process so that :meth:`start` can run it again."""
        if self.running():
            raise TestbedError(f"{self.name} is still running (pid {self.pid})")
        self.stop()
        self._popen = None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
