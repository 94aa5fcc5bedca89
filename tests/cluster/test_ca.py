"""roost.cluster.ca and ``roost cluster``: the cluster CA, node and administrator certificates."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from roost.cli import main
from roost.cluster.ca import (
    CAError,
    ClusterFiles,
    Identity,
    identity_of,
    init_cluster,
    issue,
    node_name_of_der,
    signed_by,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def verify_as_client(cert: Path, ca: Path) -> list[x509.GeneralName]:
    """Full chain validation (RFC 5280 profile, client-authentication usage)."""
    verifier = PolicyBuilder().store(Store([load(ca)])).build_client_verifier()
    return list(verifier.verify(load(cert), []).subjects or [])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- init ---------------------------------------------------------------------------------------


def test_init_creates_a_ca_and_this_nodes_certificate(tmp_path: Path) -> None:
    files = init_cluster(tmp_path, "n1")
    assert files == ClusterFiles.in_data_dir(tmp_path)
    cluster = tmp_path / "cluster"
    assert sorted(p.name for p in cluster.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "node-key.pem",
        "node.pem",
    ]
    ca = load(files.ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    assert signed_by(load(files.cert), ca)


def test_private_keys_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    files = init_cluster(tmp_path, "n1")
    assert mode(tmp_path / "cluster" / "ca-key.pem") == 0o600
    assert mode(files.key) == 0o600
    assert mode(tmp_path / "cluster") == 0o700


def test_a_node_certificate_names_its_node_in_the_cn_and_a_uri(tmp_path: Path) -> None:
    cert = load(init_cluster(tmp_path, "eu-1.prod").cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "eu-1.prod"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "node"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:roost:node:eu-1.prod"]
    assert identity_of(cert) == Identity("node", "eu-1.prod")


def test_keys_are_ecdsa_p256(tmp_path: Path) -> None:
    files = init_cluster(tmp_path, "n1")
    for cert in (load(files.ca), load(files.cert)):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"


def test_init_refuses_to_replace_an_existing_ca_without_force(tmp_path: Path) -> None:
    files = init_cluster(tmp_path, "n1")
    before = files.ca.read_bytes()
    with pytest.raises(CAError, match="--force"):
        init_cluster(tmp_path, "n1")
    assert files.ca.read_bytes() == before
    init_cluster(tmp_path, "n1", force=True)
    assert files.ca.read_bytes() != before


def test_init_refuses_a_copied_node_certificate_too(tmp_path: Path) -> None:
    # A node that received its certificate from elsewhere must not mint a second CA over it.
    init_cluster(tmp_path / "a", "a")
    issue(tmp_path / "a", "b", out=tmp_path / "b" / "cluster")
    with pytest.raises(CAError, match="already holds"):
        init_cluster(tmp_path / "b", "b")


@pytest.mark.parametrize("name", ["", "bad name", "-lead", "a/b", "x" * 64, "nöde"])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CAError, match="invalid name"):
        init_cluster(tmp_path, name)


# -- issue --------------------------------------------------------------------------------------


def test_issued_node_certificates_verify_against_the_ca(tmp_path: Path) -> None:
    init_cluster(tmp_path, "n1")
    issued = issue(tmp_path, "n2")
    assert issued.directory == tmp_path / "cluster" / "nodes" / "n2"
    assert issued.ca.read_bytes() == (tmp_path / "cluster" / "ca.pem").read_bytes()
    assert mode(issued.key) == 0o600
    assert signed_by(load(issued.cert), load(issued.ca))
    assert verify_as_client(issued.cert, issued.ca) == [
        x509.UniformResourceIdentifier("urn:roost:node:n2")
    ]
    usages = load(issued.cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_the_issued_directory_is_a_nodes_cluster_directory(tmp_path: Path) -> None:
    init_cluster(tmp_path / "n1", "n1")
    issue(tmp_path / "n1", "n2", out=tmp_path / "n2" / "cluster")
    files = ClusterFiles.in_data_dir(tmp_path / "n2")
    assert identity_of(load(files.cert)) == Identity("node", "n2")
    assert signed_by(load(files.cert), load(files.ca))


def test_a_certificate_from_another_ca_does_not_verify(tmp_path: Path) -> None:
    ours = init_cluster(tmp_path / "ours", "n1")
    theirs = init_cluster(tmp_path / "theirs", "n1")  # same node name, other cluster
    assert not signed_by(load(theirs.cert), load(ours.ca))
    with pytest.raises(VerificationError):
        verify_as_client(theirs.cert, ours.ca)


def test_issue_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    init_cluster(tmp_path, "n1")
    first = issue(tmp_path, "n2").cert.read_bytes()
    with pytest.raises(CAError, match="--force"):
        issue(tmp_path, "n2")
    assert issue(tmp_path, "n2", force=True).cert.read_bytes() != first


def test_issue_needs_the_ca_key(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="no cluster CA"):
        issue(tmp_path, "n2")


def test_an_admin_certificate_is_marked_and_cannot_serve(tmp_path: Path) -> None:
    init_cluster(tmp_path, "n1")
    issued = issue(tmp_path, "alice", admin=True)
    assert issued.directory == tmp_path / "cluster" / "admins" / "alice"
    assert issued.cert.name == "admin.pem"
    cert = load(issued.cert)
    assert identity_of(cert) == Identity("admin", "alice")
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "admin"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert verify_as_client(issued.cert, issued.ca)  # good for a remote `roost ctl`...
    assert node_name_of_der(cert.public_bytes(Encoding.DER)) is None  # ...but names no node


def test_node_name_of_der_reads_what_tls_hands_over(tmp_path: Path) -> None:
    cert = load(init_cluster(tmp_path, "n7").cert)
    assert node_name_of_der(cert.public_bytes(Encoding.DER)) == "n7"
    assert node_name_of_der(b"not a certificate") is None


# -- the command line ---------------------------------------------------------------------------


def test_cli_init_then_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["cluster", "init", "--node", "n1", *data]) == 0
    out = capsys.readouterr().out
    assert "created a cluster CA" in out
    assert "issued node 'n1'" in out
    assert main(["cluster", "issue", "n2", *data]) == 0
    assert f"copy {tmp_path / 'cluster' / 'nodes' / 'n2'}" in capsys.readouterr().out
    assert main(["cluster", "issue", "ops", "--admin", "--out", str(tmp_path / "ops"), *data]) == 0
    assert "issued administrator 'ops'" in capsys.readouterr().out
    assert identity_of(load(tmp_path / "ops" / "admin.pem")) == Identity("admin", "ops")


def test_cli_init_twice_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["cluster", "init", "--node", "n1", *data]) == 0
    capsys.readouterr()
    assert main(["cluster", "init", "--node", "n1", *data]) == 1
    assert "use --force" in capsys.readouterr().err
    assert main(["cluster", "init", "--node", "n1", "--force", *data]) == 0


def test_cli_issue_without_a_ca_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cluster", "issue", "n2", "--data-dir", str(tmp_path)]) == 1
    assert "roost cluster init" in capsys.readouterr().err


def test_cli_init_defaults_the_node_name_to_the_host(tmp_path: Path) -> None:
    assert main(["cluster", "init", "--data-dir", str(tmp_path)]) == 0
    identity = identity_of(load(tmp_path / "cluster" / "node.pem"))
    assert identity is not None
    assert identity.kind == "node"
    assert identity.name
