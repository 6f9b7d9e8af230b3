"""A private CA and the certificates of the devstack's secured Kafka listeners and Redis's TLS port, made with
``openssl``.

Made once per run dir (``<run>/certs``) and reused by later starts; ``down`` leaves them (they are not
Kafka's data). Files, all PEM:

- ``ca.pem`` / ``ca.key``: the CA every certificate below is signed by (clients trust ``ca.pem``);
- ``server.pem`` / ``server.key`` (+ ``server-keystore.pem``, key then certificate, Kafka's PEM keystore):
  the broker and Redis, for ``localhost``, ``127.0.0.1`` and the bridge address;
- ``client.pem`` / ``client.key`` (+ ``client-keystore.pem``): a client certificate (CN ``autoscaler``)
  for the listener that requires one;
- ``other-ca.pem``: a CA that signed nothing here, for clients that must NOT trust the servers;
- ``expired.pem`` / ``expired.key``: a server certificate from ``ca.pem`` for the same names that expired in
  2020, for a server a client must refuse although it trusts its CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.config import Layout

_DAYS = "825"


class _File:
    """A Certificates attribute: the path of one file in its directory."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, certs: Certificates, owner: type[Certificates] | None = None) -> Path:
        return certs.directory / self._name


@dataclass(frozen=True, slots=True)
class Certificates:
    directory: Path

    ca = _File("ca.pem")
    other_ca = _File("other-ca.pem")
    server_cert = _File("server.pem")
    server_key = _File("server.key")
    server_keystore = _File("server-keystore.pem")
    client_cert = _File("client.pem")
    client_key = _File("client.key")
    client_keystore = _File("client-keystore.pem")
    expired_cert = _File("expired.pem")
    expired_key = _File("expired.key")


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed:\n{done.stderr}")


def _key(directory: Path, name: str) -> None:
    """``<name>.key``: a P-256 key, PKCS#8 (what Kafka's PEM keystore reads)."""
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        f"{name}.key",
        cwd=directory,
    )


def _ca(directory: Path, name: str, subject: str) -> None:
    _key(directory, name)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", _DAYS, "-subj", subject,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip


def _leaf(directory: Path, name: str, subject: str, extensions: str) -> None:
    _key(directory, name)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", _DAYS, "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip
    keystore = (directory / f"{name}.key").read_text() + (directory / f"{name}.pem").read_text()
    (directory / f"{name}-keystore.pem").write_text(keystore)


def _expired(directory: Path, name: str, subject: str, extensions: str) -> None:
    """A leaf signed by ``ca.pem`` whose validity ended on 2 January 2020 (``openssl ca`` sets the dates)."""
    _key(directory, name)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(extensions)
    (directory / f"{name}-index.txt").write_text("")
    (directory / f"{name}-ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\n"
        f"database = {name}-index.txt\nnew_certs_dir = .\nserial = {name}.srl\ndefault_md = sha256\n"
        "policy = p\nunique_subject = no\n[p]\ncommonName = supplied\n"
    )
    (directory / f"{name}.srl").write_text("1000\n")
    _openssl(
        "ca", "-batch", "-config", f"{name}-ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
        "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext", "-extfile", f"{name}.ext",
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
        cwd=directory,
    )  # fmt: skip


def ensure(layout: Layout) -> Certificates:
    """The run dir's certificates, made now when missing (about a tenth of a second)."""
    certs = Certificates(layout.run / "certs")
    if (certs.directory / ".complete").exists():
        if not certs.expired_cert.exists():  # made by a devstack from before the expired certificate
            _expired(certs.directory, "expired", "/CN=localhost", _server_extensions(layout))
        return certs
    directory = certs.directory
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca", "/CN=queue-autoscaler devstack CA")
    _ca(directory, "other-ca", "/CN=a CA the devstack broker does not use")
    _leaf(directory, "server", "/CN=localhost", _server_extensions(layout))
    _expired(directory, "expired", "/CN=localhost", _server_extensions(layout))
    _leaf(
        directory,
        "client",
        "/CN=autoscaler",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    (directory / ".complete").write_text("")
    return certs


def _server_extensions(layout: Layout) -> str:
    return (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:{layout.bridge_ip}\n"
    )
