"""A local certificate authority, made with ``openssl``, for the broker that ``citysense up`` and the
tests run: a CA, a server certificate for 127.0.0.1 and localhost, and client certificates on demand.
A city uses its own PKI instead (see the README); this only makes TLS real on one machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class TlsError(RuntimeError):
    pass


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if not exe:
        raise TlsError("openssl is not installed: run deploy/local/install.sh (or `make run`)")
    r = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise TlsError(f"openssl {args[0]} failed: {r.stderr.strip()[-500:]}")


@dataclass(frozen=True)
class LocalCA:
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def ensure(self, days: int = 825) -> "LocalCA":
        """Create the CA and the server certificate unless they exist (kept between runs)."""
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        if not self.ca_file.exists():
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days), "-subj", "/CN=citysense local CA",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     cwd=d)
            os.chmod(d / "ca.key", 0o600)
            self.server_cert.unlink(missing_ok=True)
        if not self.server_cert.exists():
            self._issue("server", "localhost", days, server=True)
        return self

    def client_cert(self, name: str, days: int = 825) -> tuple[Path, Path]:
        """A client certificate (CN = ``name``) signed by this CA: (certificate, key)."""
        self._issue(name, name, days, server=False)
        return self.directory / f"{name}.crt", self.directory / f"{name}.key"

    def _issue(self, stem: str, cn: str, days: int, server: bool) -> None:
        d = self.directory
        ext = d / f"{stem}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       + ("extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                          else "extendedKeyUsage=clientAuth\n"))
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={cn}", cwd=d)
        os.chmod(d / f"{stem}.key", 0o600)
        _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{stem}.crt", "-days", str(days), "-extfile", ext.name, cwd=d)
        (d / f"{stem}.csr").unlink()
        ext.unlink()
