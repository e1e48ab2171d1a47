"""One way to open an MQTT connection: a broker endpoint (``mqtt://`` or ``mqtts://``, the CA and an
optional client certificate) and an account. Used by the ingestor, the simulator, the API's account
management and the tests, so TLS and credentials behave the same everywhere.

A broker whose certificate cannot be verified is a start-up error that says so (``BrokerUnverified``),
not a connection retried forever; a broker that is merely down is retried by the caller.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TLS_SCHEMES = ("mqtts", "ssl")
PLAIN_SCHEMES = ("mqtt", "tcp")


class BrokerUnverified(RuntimeError):
    """The broker's TLS certificate could not be verified (or the handshake failed): a setting is wrong."""


@dataclass(frozen=True)
class Endpoint:
    """Where the broker is and how to trust it."""

    host: str
    port: int
    tls: bool = False
    ca_file: Path | None = None  # None with TLS: the system's trusted CAs
    cert_file: Path | None = None  # a client certificate, for brokers that require one
    key_file: Path | None = None

    @classmethod
    def from_url(cls, url: str, ca_file=None, cert_file=None, key_file=None) -> "Endpoint":
        parts = urlsplit(url)
        if parts.scheme not in TLS_SCHEMES + PLAIN_SCHEMES or not parts.hostname:
            raise ValueError(f"not an MQTT URL (mqtt://host:port or mqtts://host:port): {url!r}")
        tls = parts.scheme in TLS_SCHEMES
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls,
                   Path(ca_file) if ca_file else None, Path(cert_file) if cert_file else None,
                   Path(key_file) if key_file else None)

    @classmethod
    def of(cls, settings) -> "Endpoint":
        """The broker that a services.core.settings.Settings names (the first, when it names several)."""
        return cls.all_of(settings)[0]

    @classmethod
    def all_of(cls, settings) -> list["Endpoint"]:
        """Every broker CITYSENSE_MQTT_URL names (comma-separated), in order."""
        return [cls.from_url(url.strip(), settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)
                for url in settings.mqtt_url.split(",")]

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Certificates verified and the host name checked; TLS 1.2 at least."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


def client(endpoint: Endpoint, client_id: str, username: str | None = None, password: str | None = None,
           protocol=mqtt.MQTTv5, **kw) -> mqtt.Client:
    """A paho client for ``endpoint`` with this account (not yet connected)."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kw)
    if username is not None:
        c.username_pw_set(username, password)
    if endpoint.tls:
        c.tls_set_context(endpoint.ssl_context())
    return c


def connect(c: mqtt.Client, endpoint: Endpoint, **kw) -> None:
    """Connect now. A TLS failure raises BrokerUnverified with what to fix; a broker that does not
    answer raises OSError (the caller retries)."""
    try:
        c.connect(endpoint.host, endpoint.port, **kw)
    except ssl.SSLCertVerificationError as exc:
        raise BrokerUnverified(
            f"the broker at {endpoint.url} presented a certificate that cannot be verified ({exc.verify_message}): "
            "set CITYSENSE_MQTT_CA_FILE to the CA that signed it, and reach the broker by a name its certificate holds"
        ) from None
    except ssl.SSLError as exc:
        raise BrokerUnverified(f"TLS with the broker at {endpoint.url} failed: {exc.reason or exc}; is it a TLS port?") from None
