"""Where an MQTT broker is, what its topics are, and the command-line options that say so.

Apart from :mod:`.mqtt` and :mod:`.mqtt_source`, so that a command line can offer the broker's
options, and a viewer attached over a socket can start, without loading the MQTT client
(aiomqtt and paho: 6.4 MB of every viewer's memory). The client is imported where one is made.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import aiomqtt

__all__ = [
    "ALL_SESSIONS",
    "DEFAULT_PREFIX",
    "LAST_WILL_REASON",
    "PASSWORD_ENV",
    "MqttOptions",
    "Topics",
    "add_mqtt_arguments",
    "mqtt_options_from_args",
    "topic_level",
]

ALL_SESSIONS: Final = "all"
"""A viewer's session name that follows every session under the prefix."""
DEFAULT_PREFIX: Final = "ganga-monitor"
PASSWORD_ENV: Final = "GANGA_MONITOR_MQTT_PASSWORD"
LAST_WILL_REASON: Final = "the session stopped answering its broker (last will)"
"""The reason of the SessionEnded a broker sends for a session that vanished.

A broker also sends it when the broker itself shuts down, so viewers take it as a lost
connection to the session, not as its end."""


def topic_level(name: str) -> str:
    """A name made safe as one topic level (no ``/``, ``+``, ``#`` or NUL)."""
    return re.sub(r"[/+#\x00]", "_", name) or "_"


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Where the broker is and how to log in to it; passed through to aiomqtt."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    prefix: str = DEFAULT_PREFIX
    keepalive: int = 10
    """Seconds; the broker sends the last will after about 1.5 times this of silence."""

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttOptions:
        """Options from ``mqtt://[user[:password]@]host[:port][/prefix]`` (``mqtts://`` for TLS).

        Raises:
            ValueError: not such a URL.
        """
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"--mqtt wants mqtt://host:port or mqtts://host:port, not {url!r}")
        if not parts.hostname:
            raise ValueError(f"no broker host in {url!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        values: dict[str, Any] = {
            "host": parts.hostname,
            "port": port,
            "tls": tls,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "prefix": parts.path.strip("/") or DEFAULT_PREFIX,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    def describe(self) -> str:
        """The broker's address without secrets."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.prefix}"

    def client(self, identifier: str, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
        """An aiomqtt client (not yet connected) with these options."""
        import aiomqtt  # only where a client is made: see the module's docstring

        tls_params = None
        if self.tls or self.tls_ca or self.tls_cert:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=self.tls_ca,
                certfile=self.tls_cert,
                keyfile=self.tls_key,
                cert_reqs=ssl.CERT_NONE if self.tls_insecure else ssl.CERT_REQUIRED,
            )
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            will=will,
            keepalive=self.keepalive,
            tls_params=tls_params,
            tls_insecure=self.tls_insecure if tls_params is not None else None,
            timeout=10.0,
        )


def add_mqtt_arguments(parser: argparse._ActionsContainer, *, session_side: bool) -> None:
    """Add ``--mqtt`` and its login and TLS options to a parser."""
    what = "publish the session through this broker" if session_side else "watch sessions through this broker"
    parser.add_argument("--mqtt", default=None, metavar="URL", help=f"{what}: mqtt://host:1883 or mqtts://host:8883")
    parser.add_argument("--mqtt-username", default=None, metavar="NAME", help="broker user name")
    parser.add_argument(
        "--mqtt-password", default=None, metavar="SECRET", help=f"broker password (or set {PASSWORD_ENV})"
    )
    parser.add_argument("--mqtt-tls-ca", default=None, metavar="FILE", help="CA certificates to trust (turns on TLS)")
    parser.add_argument("--mqtt-tls-cert", default=None, metavar="FILE", help="client certificate")
    parser.add_argument("--mqtt-tls-key", default=None, metavar="FILE", help="client certificate's key")
    parser.add_argument("--mqtt-tls-insecure", action="store_true", help="do not verify the broker's certificate")
    parser.add_argument("--mqtt-prefix", default=None, metavar="TOPIC", help=f"topic prefix (default {DEFAULT_PREFIX})")
    parser.add_argument(
        "--mqtt-keepalive",
        type=int,
        default=None,
        metavar="S",
        help="keep-alive seconds; the broker declares a silent peer dead after 1.5 times this (default 10)",
    )


def mqtt_options_from_args(args: argparse.Namespace) -> MqttOptions | None:
    """The broker options the parsed flags give, or ``None`` without ``--mqtt``.

    Raises:
        ValueError: a malformed URL.
    """
    if not args.mqtt:
        return None
    return MqttOptions.from_url(
        args.mqtt,
        username=args.mqtt_username,
        password=args.mqtt_password or os.environ.get(PASSWORD_ENV),
        tls=True if (args.mqtt_tls_ca or args.mqtt_tls_cert) else None,
        tls_ca=args.mqtt_tls_ca,
        tls_cert=args.mqtt_tls_cert,
        tls_key=args.mqtt_tls_key,
        tls_insecure=True if args.mqtt_tls_insecure else None,
        prefix=args.mqtt_prefix,
        keepalive=args.mqtt_keepalive,
    )


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one session."""

    prefix: str
    session: str

    @property
    def root(self) -> str:
        return f"{self.prefix}/{topic_level(self.session)}"

    @property
    def status(self) -> str:
        return f"{self.root}/session"

    @property
    def summary(self) -> str:
        return f"{self.root}/snapshot"

    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def command(self) -> str:
        return f"{self.root}/command"

    @property
    def ack(self) -> str:
        return f"{self.root}/ack"

    def backend(self, name: str) -> str:
        return f"{self.root}/backend/{topic_level(name)}"

    def job(self, backend: str, job_id: str) -> str:
        return f"{self.root}/job/{topic_level(backend)}/{topic_level(job_id)}"
