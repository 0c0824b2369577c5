"""A throwaway PKI for TLS tests: a CA and a host certificate it issued for HOST_NAME, as an
ingest host's operator would set up (the gateway is configured with the CA only)."""

import datetime
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

HOST_NAME = "ingest.meterseal.test"


def _certificate(subject, issuer_name, public_key, signing_key, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST_NAME)]),
                                        critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def host_pki(directory, name):
    """A CA and a host certificate it issued; returns (CA PEM path, server context)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(name, name, ca_key.public_key(), ca_key, ca=True)
    host_key = ec.generate_private_key(ec.SECP256R1())
    host = _certificate(HOST_NAME, name, host_key.public_key(), ca_key, ca=False)
    ca_path = directory / f"{name}.pem"
    ca_path.write_bytes(ca.public_bytes(Encoding.PEM))
    chain = directory / f"{name}-host.pem"
    chain.write_bytes(host.public_bytes(Encoding.PEM) + host_key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_path, context
