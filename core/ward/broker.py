"""A real Eclipse Mosquitto for tests, the ward benchmark and the README's walk-through.

:class:`MosquittoBroker` writes a ``mosquitto.conf`` into its folder (one listener on
127.0.0.1, persistence and the log beside it), starts the ``mosquitto`` binary, and stops,
kills or restarts it. Nothing here stands in for the broker: a missing binary is a clear error.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from painmon.core.util.errors import PainmonError
from painmon.core.ward.security import TlsFiles

log = logging.getLogger(__name__)

NOT_FOUND = (
    "Eclipse Mosquitto not found: apt-get install mosquitto (Debian/Ubuntu), brew install "
    "mosquitto, or the Windows installer from mosquitto.org"
)
# Debian installs the broker in /usr/sbin, which a normal user's PATH often lacks.
_EXTRA_DIRS = (
    "/usr/sbin",
    "/usr/local/sbin",
    "/opt/homebrew/sbin",
    "/usr/local/opt/mosquitto/sbin",
)


class BrokerError(PainmonError, RuntimeError):
    """The broker could not be found, started or stopped."""


def find_mosquitto() -> Path:
    """The ``mosquitto`` binary (PATH, then the usual sbin folders), else BrokerError."""
    found = shutil.which("mosquitto")
    if found is None:
        found = shutil.which("mosquitto", path=os.pathsep.join(_EXTRA_DIRS))
    if found is None:
        raise BrokerError(NOT_FOUND)
    return Path(found)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1 with its config, store and log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistence: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: TlsFiles | None = None,
        allow_anonymous: bool | None = None,
        require_client_cert: bool = False,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port if port is not None else free_port()
        self.persistence = persistence
        self.password_file = password_file
        self.acl_file = acl_file
        self.tls = tls
        self.require_client_cert = require_client_cert
        if require_client_cert and (tls is None or tls.cert is None or tls.key is None):
            raise BrokerError("client certificates need a TLS listener (ca, cert and key)")
        if allow_anonymous is None:
            # Anonymous only on a bare test broker: any credential scheme switches it off.
            allow_anonymous = password_file is None and not require_client_cert
        self.allow_anonymous = allow_anonymous
        self.extra_config = tuple(extra_config)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT`` (``mqtts://`` with TLS)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with."""
        lines = [
            "# written by painmon (core/ward/broker.py)",
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            # Small messages must leave at once, not wait for Nagle's algorithm.
            "set_tcp_nodelay true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir.resolve()}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path.resolve()}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.name == "posix" and os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", who cannot write our temp folder.
            lines.append(f"user {getpass.getuser()}")
        if self.password_file is not None:
            lines.append(f"password_file {Path(self.password_file).resolve()}")
        if self.acl_file is not None:
            lines.append(f"acl_file {Path(self.acl_file).resolve()}")
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.tls is not None:
            lines.append(f"cafile {Path(self.tls.ca).resolve()}")
            if self.tls.cert is None or self.tls.key is None:
                raise BrokerError("a TLS listener needs the server certificate and key")
            lines.append(f"certfile {Path(self.tls.cert).resolve()}")
            lines.append(f"keyfile {Path(self.tls.key).resolve()}")
            lines.append("tls_version tlsv1.2")
            if self.require_client_cert:
                # The certificate's common name is the MQTT user name: the ACL applies to it.
                lines.append("require_certificate true")
                lines.append("use_identity_as_username true")
        lines.extend(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 5.0) -> MosquittoBroker:
        """Start mosquitto and wait until its port accepts; BrokerError with the log tail if not."""
        if self.running:
            return self
        binary = find_mosquitto()
        if _port_open(self.port):
            # Another listener would answer our readiness probe and hide mosquitto's failure.
            raise BrokerError(f"127.0.0.1:{self.port} is already in use by another program")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        stderr = (self.workdir / "mosquitto.stderr").open("ab")
        try:
            self._process = subprocess.Popen(
                [str(binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        finally:
            stderr.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with code {self._process.returncode} at start:\n"
                    + self.log_tail()
                )
            if _port_open(self.port):
                log.info("mosquitto %s listening on %s", self._process.pid, self.url)
                return self
            time.sleep(0.02)
        self.kill()
        raise BrokerError(
            f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout_s} s:\n"
            + self.log_tail()
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its store) and wait; SIGKILL if it hangs."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: the crash case, the store holds what the last autosave wrote."""
        self._signal_and_wait(signal.SIGKILL, 5.0)

    def restart(self, timeout_s: float = 5.0) -> MosquittoBroker:
        """Stop (if running) and start again on the same port with the same store."""
        self.stop()
        return self.start(timeout_s)

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto %s ignored %s; killing it", process.pid, sig.name)
            process.kill()
            process.wait(timeout=5.0)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the broker's log and stderr (for error messages)."""
        out = []
        for path in (self.log_path, self.workdir / "mosquitto.stderr"):
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                out.extend(text[-lines:])
        return "\n".join(out) or "(mosquitto wrote no log)"

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
