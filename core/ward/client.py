"""Connecting to the ward broker with paho-mqtt 2.x (MQTT 5).

paho runs its own network thread (``loop_start``): callbacks run on that thread, so whoever
uses a client hands data to its owner (the engine thread, the Qt thread) through a
thread-safe queue or Event and never touches engine or widgets from a callback.
Passwords never reach a log: addresses print through :func:`redact_source`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.redact import redact_source
from painmon.core.ward import topics
from painmon.core.ward.security import TlsFiles

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 2.0
# A dead bed must show OFFLINE within 5 s: the broker sends its Will after 1.5 x keepalive.
DEFAULT_KEEPALIVE_S = 3

Will = tuple[str, bytes, int, bool]


class BrokerConnectError(PainmonError, ConnectionError):
    """The broker could not be reached, refused the credentials, or failed TLS verification."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is: ``mqtt://host:port`` or ``mqtts://host:port`` (+ user:password@)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """The address in ``url``; InvalidInputError (password hidden) when it is not one."""
        shown = redact_source(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidInputError(f"broker address {shown!r} is not valid: {exc}") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise InvalidInputError(
                f"broker address {shown!r} must start with mqtt:// or mqtts:// "
                "(e.g. mqtt://127.0.0.1:1883)"
            )
        if not parts.hostname:
            raise InvalidInputError(f"broker address {shown!r} names no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidInputError(f"broker address {shown!r} must be only scheme://host:port")
        return cls(
            host=parts.hostname,
            port=port if port is not None else DEFAULT_PORTS[parts.scheme],
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    @classmethod
    def parse_option(cls, url: str, option: str) -> BrokerAddress:
        """:meth:`parse` for a command-line option: a password in it is refused, since every
        user of the machine can read a command line (``ps``)."""
        address = cls.parse(url)
        if address.password is not None:
            raise InvalidInputError(
                f"{option} {redact_source(url)}: a password on the command line is visible to "
                "every user of this machine; put it in a file and pass --mqtt-password-file "
                "FILE with --mqtt-user USER"
            )
        return address

    @property
    def url(self) -> str:
        """The address without credentials (safe to log)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def read_secret(path: Path) -> str:
    """The first line of a password file (``--mqtt-password-file``), stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read the password file {path}: {exc.strerror}") from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise InvalidInputError(f"the password file {path} is empty")
    return secret


def connect_client(
    address: BrokerAddress,
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: TlsFiles | None = None,
    will: Will | None = None,
    on_connect: Callable[..., Any] | None = None,
    on_disconnect: Callable[..., Any] | None = None,
    on_message: Callable[..., Any] | None = None,
    keepalive_s: int = DEFAULT_KEEPALIVE_S,
    wait_s: float | None = 5.0,
    session_expiry_s: int = 0,
) -> mqtt.Client:
    """A started paho client (MQTT 5, automatic reconnect, network thread).

    Callbacks use paho's VERSION2 signatures and are set before the first CONNECT, so none
    is missed. With ``wait_s`` the first connection is made here and must be accepted within
    ``wait_s`` (else :class:`BrokerConnectError`, saying why); with ``wait_s=None`` the client
    keeps trying in the background (a bed starting before its broker).

    ``session_expiry_s`` > 0 asks for a persistent session (``clean_start=False`` and the
    CONNECT property Session Expiry Interval): the broker keeps the subscriptions and queues
    QoS 1 messages for this ``client_id`` while it is away that long, so the id must be fixed
    (a station or gateway restarting gets what was published meanwhile). 0: clean start.
    """
    if session_expiry_s < 0:
        raise InvalidInputError(f"session_expiry_s must be >= 0, got {session_expiry_s}")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    user = username if username is not None else address.username
    secret = password if password is not None else address.password
    if user is not None:
        client.username_pw_set(user, secret)
    if tls is not None or address.tls:
        client.tls_set(
            ca_certs=str(tls.ca) if tls else None,
            certfile=str(tls.cert) if tls and tls.cert else None,
            keyfile=str(tls.key) if tls and tls.key else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if will is not None:
        will_topic, will_payload, will_qos, will_retain = will
        client.will_set(will_topic, will_payload, will_qos, will_retain)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    clean_start = session_expiry_s == 0
    connect_properties = None
    if session_expiry_s > 0:
        # paho keeps these properties and clean_start for its automatic reconnects too.
        connect_properties = Properties(PacketTypes.CONNECT)
        connect_properties.SessionExpiryInterval = int(session_expiry_s)

    accepted = threading.Event()
    first_reason: list[Any] = []

    def _on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not first_reason:
            first_reason.append(reason)
            accepted.set()
        if reason.is_failure:
            log.warning("broker %s refused %s: %s", address.url, client_id, reason)
        if on_connect is not None:
            on_connect(c, userdata, flags, reason, props)

    def _on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not first_reason:
            # Closed before any CONNACK (no client certificate, plain MQTT on a TLS port…).
            first_reason.append(reason)
            accepted.set()
        if on_disconnect is not None:
            on_disconnect(c, userdata, flags, reason, props)

    client.on_connect = _on_connect
    client.on_disconnect = _on_disconnect
    client.on_message = on_message

    if wait_s is None:
        client.connect_async(
            address.host,
            address.port,
            keepalive=keepalive_s,
            clean_start=clean_start,
            properties=connect_properties,
        )
        client.loop_start()
        return client

    try:
        client.connect(
            address.host,
            address.port,
            keepalive=keepalive_s,
            clean_start=clean_start,
            properties=connect_properties,
        )
    except ssl.SSLCertVerificationError as exc:
        raise BrokerConnectError(
            f"TLS verification of {address.url} failed ({exc.verify_message}): "
            "give the ward's CA with --tls-ca"
        ) from None
    except ssl.SSLError as exc:
        raise BrokerConnectError(f"TLS with {address.url} failed: {exc.reason or exc}") from None
    except (TimeoutError, OSError) as exc:
        raise BrokerConnectError(
            f"cannot reach the MQTT broker at {address.url}: {exc.strerror or exc}"
        ) from None
    client.loop_start()
    if not accepted.wait(wait_s):
        _abandon(client)
        raise BrokerConnectError(f"the MQTT broker at {address.url} did not answer in {wait_s} s")
    reason = first_reason[0]
    if reason.is_failure or not client.is_connected():
        _abandon(client)
        who = f"user {user!r}" if user else "an anonymous client"
        raise BrokerConnectError(f"the MQTT broker at {address.url} refused {who}: {reason}")
    return client


def _abandon(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def close_client(client: mqtt.Client) -> None:
    """Disconnect cleanly (no Last Will) and stop the network thread."""
    client.disconnect()
    client.loop_stop()


def publish_message(
    client: mqtt.Client,
    message: Any,
    *,
    expiry_s: int | None = None,
    user_properties: Mapping[str, str] | None = None,
) -> mqtt.MQTTMessageInfo:
    """Publish a ward message on its topic with the contract's QoS/retained flag.

    ``obs`` carries a Message Expiry Interval (2 s unless ``expiry_s`` says otherwise);
    ``user_properties`` ride as MQTT 5 User Properties beside the JSON (e.g. a send stamp).
    """
    leaf = message.LEAF
    if expiry_s is None and leaf == topics.OBS:
        expiry_s = topics.OBS_EXPIRY_S
    properties = None
    if expiry_s is not None or user_properties:
        properties = Properties(PacketTypes.PUBLISH)
        if expiry_s is not None:
            properties.MessageExpiryInterval = int(expiry_s)
        if user_properties:
            properties.UserProperty = list(user_properties.items())
    return client.publish(
        topics.topic(message.ward, message.bed, leaf),
        message.to_payload(),
        qos=topics.qos_of(leaf),
        retain=topics.retained(leaf),
        properties=properties,
    )


def user_properties(message: Any) -> dict[str, str]:
    """The MQTT 5 User Properties of a received paho message, as a dict."""
    properties = getattr(message, "properties", None)
    pairs = getattr(properties, "UserProperty", None) or []
    return dict(pairs)
