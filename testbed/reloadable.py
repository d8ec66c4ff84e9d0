"""What Prometheus and Alertmanager have in common: a generated YAML configuration, a
``/-/ready`` endpoint, a ``/-/reload`` endpoint, and data that survives a restart.

:meth:`ReloadableServer.stop` stops the process but keeps its data, so :meth:`start` brings
it back on the same port (tests stop Prometheus to make analyses inconclusive, then start
it again); :meth:`close` stops it for good and removes the temporary directory.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml

from testbed.ports import LOOPBACK, free_port
from testbed.process import (
    ServerProcess,
    TestbedError,
    keep_workdirs,
    register_cleanup,
    remove_tree,
    unregister_cleanup,
    wait_until,
)


class ServerUnavailableError(TestbedError):
    """The server did not answer (stopped, or not started)."""


class ReloadableServer:
    """Base class: subclasses give :attr:`name`, :meth:`_argv` and :meth:`_config`."""

    name = "server"

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._given_workdir = workdir
        self._workdir: Path | None = None
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self._process: ServerProcess | None = None
        self._lock = threading.RLock()

    # -- to implement ----------------------------------------------------------------------

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _settled(self) -> None:
        """Wait until a (re)loaded configuration is in effect; called after start and reload."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = self._given_workdir or Path(
                tempfile.mkdtemp(prefix=f"modelrollout-{self.name}-")
            )
            self._workdir.mkdir(parents=True, exist_ok=True)
            register_cleanup(self, self.close)
        return self._workdir

    @property
    def config_file(self) -> Path:
        return self.workdir / f"{self.name}.yml"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def start(self) -> Self:
        """Write the configuration, start the process, wait until ``/-/ready`` answers 200."""
        with self._lock:
            if self.running:
                return self
            self._write_config()
            process = ServerProcess(self.name, self._argv(), log_path=self.log_file)
            self._process = process
            try:
                process.start()
                wait_until(
                    lambda: self._ready(process),
                    timeout=self.start_timeout,
                    what=f"{self.name} /-/ready at {self.url}",
                    on_timeout=lambda: str(process.failure("did not become ready")),
                )
                self._settled()
            except BaseException:
                process.stop()
                raise
            return self

    def stop(self) -> None:
        """Stop the process and keep its data: :meth:`start` resumes. Idempotent."""
        with self._lock:
            if self._process is not None:
                self._process.stop()
                self._process = None

    def close(self) -> None:
        """Stop the process and remove the temporary directory. Idempotent."""
        with self._lock:
            self.stop()
            if self._workdir is not None and self._given_workdir is None and not keep_workdirs():
                remove_tree(self._workdir)
            self._workdir = None
            unregister_cleanup(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def reload(self) -> None:
        """Write the configuration and have the running server load it (``/-/reload``).

        Raises with the server's message when it rejects the configuration, which it then
        keeps running on the previous one. Without a running server, only writes it.
        """
        with self._lock:
            self._write_config()
            if not self.running:
                return
            response = self._request("POST", "/-/reload", timeout=30)
            if response.status_code != 200:
                raise TestbedError(
                    f"{self.name} rejected its configuration {self.config_file}: "
                    f"{response.text.strip()}\n--- configuration ---\n"
                    f"{self.config_file.read_text()}"
                )
            self._settled()

    def log_tail(self, lines: int = 40) -> str:
        if self._process is None:
            return f"({self.name} is not running)"
        return self._process.log_tail(lines)

    # -- helpers for subclasses ------------------------------------------------------------

    def _write_config(self) -> None:
        self.config_file.write_text(yaml.safe_dump(self._config(), sort_keys=False))

    def _ready(self, process: ServerProcess) -> bool:
        process.check_running()
        try:
            return self._request("GET", "/-/ready", timeout=2).status_code == 200
        except ServerUnavailableError:
            return False

    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float = 10.0,
        params: dict[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        try:
            return httpx.request(
                method, f"{self.url}{path}", params=params, json=json, timeout=timeout
            )
        except httpx.TransportError as exc:
            raise ServerUnavailableError(
                f"{self.name} at {self.url} did not answer: {exc}"
            ) from exc

    def _get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        response = self._request("GET", path, params=params)
        if response.status_code != 200:
            raise TestbedError(
                f"{self.name} GET {path} {params or ''} answered {response.status_code}: "
                f"{response.text.strip()}"
            )
        return response.json()
