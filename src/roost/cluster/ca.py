"""The cluster's certificate authority: who may join the mesh, and under which name.

Nodes authenticate each other with mutual TLS against a private CA that belongs to the cluster
and to nothing else: a certificate it signed is the only way into the mesh, so the CA key is
the cluster's root secret (keep it on one machine, or offline once every node has its
certificate). ``roost cluster init`` creates the CA and the local node's certificate;
``roost cluster issue NAME`` issues one for another node, written as a directory to copy into
that node's data directory as ``cluster/``.

Layout of ``<data_dir>/cluster/``::

    ca.pem          the CA certificate: every node trusts it (public)
    ca-key.pem      the CA key, mode 0600: only on the machine that issues certificates
    node.pem        this node's certificate, signed by the CA
    node-key.pem    this node's key, mode 0600
    nodes/NAME/     certificates issued for other nodes (node.pem, node-key.pem, ca.pem)
    admins/NAME/    administrator client certificates (admin.pem, admin-key.pem, ca.pem)

Identity. A node certificate names its node twice: as the subject's common name (what people
read) and as a URI subject alternative name ``urn:roost:node:NAME`` (what the mesh checks: the
name a peer claims in its hello must be the one its certificate carries). The URI form keeps
node names apart from DNS host names: a node is not a host, and several may share one.
Administrator certificates carry ``urn:roost:admin:NAME`` and the organisational unit
``admin``, and only the client-authentication extended key usage, so they can open a TLS
connection as a client (for a remote ``roost ctl``) but can never act as a node: the mesh
refuses a certificate that does not name a node. Node certificates have both server and
client authentication, since every node both accepts and opens links.

Keys are ECDSA P-256 (small, fast handshakes, supported everywhere). The CA is valid for ten
years with a path length of zero (it signs leaves only); leaves for two years and three
months (825 days, the longest lifetime TLS clients commonly accept).
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=825)
# Certificates start a little in the past so that a node whose clock is slightly behind the
# issuer's accepts them at once.
_BACKDATE = datetime.timedelta(minutes=5)

NODE_URI_PREFIX = "urn:roost:node:"
ADMIN_URI_PREFIX = "urn:roost:admin:"
NODE_UNIT = "node"
ADMIN_UNIT = "admin"

# Node names travel in certificates (URIs), hello frames, logs and directory names: letters,
# digits, and . _ - only, starting with a letter or digit.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

Kind = Literal["node", "admin"]
_PREFIXES: tuple[tuple[str, Kind], ...] = ((NODE_URI_PREFIX, "node"), (ADMIN_URI_PREFIX, "admin"))


class CAError(Exception):
    """A CA operation could not be done; the message says why, for people."""


@dataclass(frozen=True, slots=True)
class ClusterFiles:
    """Where a node's cluster credentials are: the CA to trust, its certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> ClusterFiles:
        """The standard names inside a ``cluster/`` directory (or a copy of one)."""
        return cls(directory / "ca.pem", directory / "node.pem", directory / "node-key.pem")

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ClusterFiles:
        return cls.in_directory(cluster_dir(data_dir))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a cluster certificate says its holder is."""

    kind: Kind
    name: str


def cluster_dir(data_dir: Path) -> Path:
    return data_dir / "cluster"


def validate_name(name: str) -> str:
    """Return ``name`` if it can name a node or an administrator, else raise :class:`CAError`."""
    if not _NAME.fullmatch(name):
        raise CAError(
            f"invalid name {name!r}: use up to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


# -- creating -----------------------------------------------------------------------------------


def init_cluster(data_dir: Path, node: str, *, force: bool = False) -> ClusterFiles:
    """Create a new cluster CA in ``<data_dir>/cluster`` and this node's certificate.

    Refuses (:class:`CAError`) when a CA or a node certificate is already there, unless
    ``force``: a new CA cuts this node off from every node whose certificate the old one
    signed.
    """
    validate_name(node)
    directory = cluster_dir(data_dir)
    files = ClusterFiles.in_directory(directory)
    ca_key_path = directory / "ca-key.pem"
    existing = [p for p in (files.ca, ca_key_path, files.cert, files.key) if p.exists()]
    if existing and not force:
        names = ", ".join(p.name for p in existing)
        raise CAError(
            f"{directory} already holds cluster credentials ({names}); "
            "use --force to replace them with a new CA"
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _build_ca(ca_key)
    _write_key(ca_key_path, ca_key)
    _write_cert(files.ca, ca_cert)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(files.key, key)
    _write_cert(files.cert, _build_leaf(ca_cert, ca_key, key, "node", node))
    return files


@dataclass(frozen=True, slots=True)
class Issued:
    """The files ``issue`` wrote: a directory ready to copy to the certificate's holder."""

    directory: Path
    cert: Path
    key: Path
    ca: Path
    not_after: datetime.datetime


def issue(
    data_dir: Path,
    name: str,
    *,
    admin: bool = False,
    out: Path | None = None,
    force: bool = False,
) -> Issued:
    """Issue a node (or, with ``admin``, an administrator) certificate signed by the CA.

    The CA is read from ``<data_dir>/cluster``. The files go to ``out``, by default
    ``<data_dir>/cluster/nodes/NAME`` (``admins/NAME`` for an administrator), together with a
    copy of ``ca.pem``. Existing files are kept unless ``force``.
    """
    validate_name(name)
    directory = cluster_dir(data_dir)
    ca_cert, ca_key = load_ca(directory)
    kind: Kind = "admin" if admin else "node"
    if out is None:
        out = directory / ("admins" if admin else "nodes") / name
    stem = "admin" if admin else "node"
    cert_path, key_path, ca_copy = out / f"{stem}.pem", out / f"{stem}-key.pem", out / "ca.pem"
    if not force and (cert_path.exists() or key_path.exists()):
        raise CAError(f"{out} already holds a certificate; use --force to replace it")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_leaf(ca_cert, ca_key, key, kind, name)
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    if ca_copy.resolve() != (directory / "ca.pem").resolve():
        shutil.copyfile(directory / "ca.pem", ca_copy)
    return Issued(out, cert_path, key_path, ca_copy, cert.not_valid_after_utc)


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key in a ``cluster/`` directory (:class:`CAError` if absent)."""
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if not cert_path.exists() or not key_path.exists():
        raise CAError(
            f"no cluster CA in {directory} (run `roost cluster init` first, or issue "
            "certificates on the machine that holds ca-key.pem)"
        )
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{key_path} is not an ECDSA key")
    if key.public_key() != cert.public_key():
        raise CAError(f"{key_path} is not the key of {cert_path}")
    return cert, key


# -- reading ------------------------------------------------------------------------------------


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The node or administrator a cluster certificate names, or None if it names neither.

    Only the URI subject alternative name counts: the common name is for people.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found: list[Identity] = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        for prefix, kind in _PREFIXES:
            if uri.startswith(prefix) and _NAME.fullmatch(uri[len(prefix) :]):
                found.append(Identity(kind, uri[len(prefix) :]))
    # A certificate naming two identities is ambiguous; trust neither.
    return found[0] if len(found) == 1 else None


def node_name_of_der(der: bytes) -> str | None:
    """The node named by a DER certificate (as TLS hands it over), None if not a node's."""
    try:
        identity = identity_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return None
    return identity.name if identity is not None and identity.kind == "node" else None


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert`` and ``cert`` is within its validity period now."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    now = datetime.datetime.now(datetime.UTC)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


# -- building -----------------------------------------------------------------------------------


def _build_ca(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    # A random tag in the CA's name tells two clusters' CAs apart in logs and `openssl x509`.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "roost cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"roost cluster CA {secrets.token_hex(4)}"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    kind: Kind,
    name: str,
) -> x509.Certificate:
    unit, prefix = (
        (ADMIN_UNIT, ADMIN_URI_PREFIX) if kind == "admin" else (NODE_UNIT, NODE_URI_PREFIX)
    )
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind == "node":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "roost cluster"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    not_after = min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(prefix + name)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # 0600 from the first byte (never world-readable, even briefly), then an atomic rename.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file left by a crashed run
    os.replace(tmp, path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)
