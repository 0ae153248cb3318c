"""Certificates for tests, made with `cryptography`: a CA and leaves with any validity, and
a loopback HTTPS server (tests/loopback.py's, its socket wrapped in TLS) that shows one."""

import contextlib
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.loopback import Server, serve

DAY = dt.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "monitor tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Authority:
    """A CA whose certificate is written to `folder/ca.pem`; `leaf()` issues certificates.

    With a `parent`, an intermediate CA it signs (valid from `not_before` to `not_after`),
    written to `folder/<cn>.pem`; the leaves it issues are written with it after them, the
    chain a server shows."""

    def __init__(self, folder: Path, cn: str = "monitor test CA", parent: "Authority | None" = None,
                 not_before: dt.datetime | None = None, not_after: dt.datetime | None = None):
        self.folder, self.key = Path(folder), ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(cn))
                     .issuer_name(parent.cert.subject if parent else _name(cn))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(not_before or now - 30 * DAY).not_valid_after(not_after or now + 3650 * DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(parent.key if parent else self.key, hashes.SHA256()))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / (f"{cn.replace(' ', '_')}.pem" if parent else "ca.pem")
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.chain = self.cert.public_bytes(serialization.Encoding.PEM) if parent else b""

    def leaf(self, name: str, not_before: dt.datetime, not_after: dt.datetime, cn: str | None = "127.0.0.1",
             dns=("localhost",), ips=("127.0.0.1",)) -> tuple[Path, Path, x509.Certificate]:
        """(certificate file, key file, the certificate) valid from `not_before` to `not_after`."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(cn) if cn else x509.Name([]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not cn)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.chain)
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path, cert


@contextlib.contextmanager
def https_server(cert_path, key_path):
    """A loopback Server (tests/loopback.py: `route` as usual) speaking HTTPS with this certificate."""
    server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    # The handshake happens in accept(); a client that refuses the certificate makes it
    # raise an OSError there, which the server shrugs off.
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serve(server):
        yield server


def https_url(server, path: str = "/health", host: str = "127.0.0.1") -> str:
    return f"https://{host}:{server.port}{path}"
