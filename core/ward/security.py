"""Ward bus security: TLS files, a throwaway CA, mosquitto password files and the ACL.

The ACL is the part that keeps beds apart: a bed (its MQTT user name is its bed label, or the
common name of its client certificate) may write only under its own topics and read only its
own commands; the station reads everything and writes only commands. Passwords are hashed here
(PBKDF2-SHA512, mosquitto's ``$7$`` format) so that no password appears on a command line, in a
log or in a file in clear.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.ward import topics

log = logging.getLogger(__name__)

# mosquitto 2.x reads any iteration count from the hash line; its own tool defaults to 101.
PBKDF2_ITERATIONS = 10_000
_SALT_BYTES = 12
CERT_DAYS = 2


class CertificateError(PainmonError, RuntimeError):
    """A certificate could not be made (openssl missing or failing)."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one TLS end: the CA to trust, and this end's certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InvalidInputError("a TLS certificate needs its key, and a key its certificate")
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None:
                object.__setattr__(self, name, Path(path))


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key (PEM)."""

    cert: Path
    key: Path


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise CertificateError(
            "openssl not found: apt-get install openssl (or brew install openssl)"
        )
    return found


def _run_openssl(args: list[str]) -> None:
    proc = subprocess.run([_openssl(), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(directory: Path, common_name: str = "painmon ward test CA") -> CertPair:
    """A throwaway certificate authority in ``directory`` (ca.crt, ca.key)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / "ca.crt", directory / "ca.key")
    _run_openssl(
        [
            "req", "-x509", *_EC_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
            "-days", str(CERT_DAYS), "-subj", f"/CN={common_name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )  # fmt: skip
    pair.key.chmod(0o600)
    return pair


def make_cert(ca: CertPair, directory: Path, common_name: str, server: bool) -> CertPair:
    """A certificate signed by ``ca``: a server one for 127.0.0.1/localhost, or a client one.

    A client certificate's common name becomes its MQTT user name (the bed label).
    """
    if not server:
        topics.check_label(common_name, "client certificate name")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in common_name)
    pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    csr = directory / f"{stem}.csr"
    ext = directory / f"{stem}.ext"
    if server:
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
    else:
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
            "extendedKeyUsage=clientAuth\n"
        )
    _run_openssl(
        ["req", "-new", *_EC_KEY, "-keyout", str(pair.key), "-out", str(csr),
         "-subj", f"/CN={common_name}"]
    )  # fmt: skip
    _run_openssl(
        [
            "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-set_serial", str(secrets.randbits(63)), "-out", str(pair.cert),
            "-days", str(CERT_DAYS), "-extfile", str(ext),
        ]
    )  # fmt: skip
    pair.key.chmod(0o600)
    csr.unlink()
    ext.unlink()
    return pair


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """mosquitto's ``$7$`` hash of ``password`` (PBKDF2-SHA512, random salt)."""
    if not password:
        raise InvalidInputError("an MQTT password must not be empty")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """A mosquitto password file for ``{user: password}`` (hashes only, mode 0600)."""
    lines = []
    for user, password in users.items():
        if not user or ":" in user or any(c.isspace() for c in user):
            raise InvalidInputError(f"MQTT user name {user!r} must be non-empty, no ':' or spaces")
        lines.append(f"{user}:{hash_password(password)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    log.info("wrote a password file for %d MQTT users to %s", len(lines), path)
    return path


def acl_text(ward: str, beds: Iterable[str], station_user: str, readers: Iterable[str] = ()) -> str:
    """The mosquitto ACL of one ward (see :func:`write_acl`)."""
    topics.check_label(ward, "ward")
    prefix = topics.PREFIX
    out = [
        "# written by painmon (core/ward/security.py): beds write only their own topics and",
        "# read only their own commands; the station reads all and writes only commands.",
        f"user {station_user}",
        f"topic read {prefix}/#",
        f"topic write {prefix}/+/+/cmd/#",
        "",
    ]
    for reader in readers:  # e.g. the HL7 gateway: read-only
        out += [f"user {reader}", f"topic read {prefix}/#", ""]
    for bed in beds:
        own = f"{prefix}/{ward}/{topics.check_label(bed, 'bed')}"
        out += [
            f"user {bed}",
            f"topic write {own}/{topics.OBS}",
            f"topic write {own}/alarm/#",
            f"topic write {own}/{topics.STATUS}",
            f"topic write {own}/{topics.CMD_REPLY}",
            f"topic read {own}/cmd/#",
            "",
        ]
    return "\n".join(out)


def write_acl(
    path: Path, ward: str, beds: Iterable[str], station_user: str, readers: Iterable[str] = ()
) -> Path:
    """Write the ward's ACL file: each bed user ``B`` writes ``painmon/v1/<ward>/B/{obs,
    alarm/#, status, cmd_reply}`` and reads ``.../B/cmd/#``; ``station_user`` reads
    ``painmon/v1/#`` and writes ``painmon/v1/+/+/cmd/#``; ``readers`` read only."""
    for user in (station_user, *readers):
        if not user or any(c.isspace() for c in user):
            raise InvalidInputError(f"MQTT user name {user!r} must be non-empty, no spaces")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(acl_text(ward, beds, station_user, readers), encoding="utf-8")
    return path
