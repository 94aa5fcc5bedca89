"""TLS for mesh links: TLS 1.3 only, both sides authenticated by the cluster CA.

Both contexts require the peer's certificate (``CERT_REQUIRED``) and trust only the cluster CA
(``ca.pem``), never the system's store: a certificate from any other authority, or none, fails
the handshake. Host names are not checked, since nodes are reached by address and named by
their certificates; the mesh checks instead that the name in the peer's certificate is the
node the peer says it is in its hello (and, when dialling a known member, the one expected).
"""

from __future__ import annotations

import ssl

from cryptography import x509

from roost.cluster.ca import ClusterFiles, identity_of, signed_by


class CredentialsError(Exception):
    """This node's own cluster credentials are missing or do not fit; the message says why."""


def check_credentials(files: ClusterFiles, node: str) -> None:
    """Fail early and clearly if ``files`` cannot let ``node`` join the cluster."""
    for path in (files.ca, files.cert, files.key):
        if not path.exists():
            raise CredentialsError(
                f"{path} is missing (create the cluster with `roost cluster init`, or copy a "
                "directory made by `roost cluster issue` here)"
            )
    try:
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    except ValueError as exc:
        raise CredentialsError(f"unreadable certificate: {exc}") from None
    identity = identity_of(cert)
    if identity is None or identity.kind != "node":
        raise CredentialsError(f"{files.cert} is not a node certificate")
    if identity.name != node:
        raise CredentialsError(f"{files.cert} names node {identity.name!r}, not {node!r}")
    if not signed_by(cert, ca):
        raise CredentialsError(f"{files.cert} is not signed by {files.ca}, or has expired")


def server_context(files: ClusterFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(context, files)
    context.num_tickets = 0  # links are long-lived: session resumption buys nothing
    return context


def client_context(files: ClusterFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # identity is the node name in the certificate, see above
    _configure(context, files)
    return context


def _configure(context: ssl.SSLContext, files: ClusterFiles) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(files.ca))
    try:
        context.load_cert_chain(str(files.cert), str(files.key))
    except ssl.SSLError as exc:
        raise CredentialsError(f"{files.key} does not match {files.cert}: {exc}") from None


def describe_tls_error(exc: ssl.SSLError) -> str:
    """A short reason for logs: OpenSSL's reason and, for verification, what failed."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verification failed: {exc.verify_message}"
    reason = exc.reason or str(exc)
    return str(reason).lower().replace("_", " ")
