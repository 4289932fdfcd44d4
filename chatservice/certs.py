# -*- test-case-name: tests.test_certs -*-
"""TLS listeners whose certificate can be replaced while they run (SIGHUP).

Short-lived certificates (Let's Encrypt's 90 days, or an internal CA's hours)
are renewed on disk while the server runs; a restart to pick them up would cut
every user off.  An C{ssl:} description is listened on with a
L{ReloadableCertificate} instead of Twisted's fixed one: each new connection
gets the context of the certificate loaded last, and connections already open
keep the one they started with.  A reload that cannot load the new files
(missing, a key that does not match, not PEM) is logged and the old
certificate stays in use.
"""

import re

from OpenSSL import SSL
from twisted.internet import endpoints, ssl
from twisted.logger import Logger
from twisted.python.filepath import FilePath

# The endpoint-string grammar (colons, backslash escapes) as serverFromString reads it;
# Twisted has no public parser for it, and a description must mean the same thing here.
from twisted.internet.endpoints import _parse as parse_description


class ReloadableCertificate:
    """
    A server TLS context factory that reads its key and certificate files again on
    L{reload}.

    @param private_key: the PEM file with the private key (and perhaps the certificate).
    @param cert: the PEM file with the certificate (default: C{private_key}).
    @param chain: a PEM file of intermediate certificates to send too, or None.
    @raise Exception: the files cannot be loaded now (at start: the operator is told).
    """

    log = Logger()

    def __init__(self, private_key: str, cert: str | None = None,
                 chain: str | None = None) -> None:
        self.paths = (private_key, cert or private_key, chain)
        self._options = self._load()

    def _load(self) -> ssl.CertificateOptions:
        private_key, cert, chain = self.paths
        key_pem = FilePath(private_key).getContent()
        cert_pem = FilePath(cert).getContent()
        both = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        extra = []
        if chain is not None:
            extra = [ssl.Certificate.loadPEM(block).original
                     for block in certificate_blocks(FilePath(chain).getContent())]
        options = ssl.CertificateOptions(
            privateKey=both.privateKey.original, certificate=both.original,
            extraCertChain=extra or None)
        options.getContext()  # builds it now: a key that does not match fails here
        return options

    @property
    def subject(self) -> str:
        """The certificate's subject, for the log."""
        cert = self._options.certificate
        return ", ".join(f"{k.decode()}={v.decode()}" for k, v in cert.get_subject().get_components())

    def reload(self) -> bool:
        """Read the files again; use them for new connections, or keep the old ones."""
        try:
            options = self._load()
        except Exception as e:
            self.log.error(
                "Could not reload the TLS certificate {cert} (key {key}): {error}; the "
                "certificate loaded before stays in use", cert=self.paths[1], key=self.paths[0],
                error=str(e) or type(e).__name__)
            return False
        self._options = options
        self.log.info("Reloaded the TLS certificate {cert} ({subject}) for new connections",
                      cert=self.paths[1], subject=self.subject)
        return True

    def getContext(self) -> SSL.Context:
        """The context of the certificate loaded last (for one new connection)."""
        return self._options.getContext()


def certificate_blocks(pem: bytes) -> list[bytes]:
    """Each PEM certificate in C{pem} (a chain file, a CA bundle), in order."""
    return re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem,
                      re.DOTALL)


def reloadable_endpoint(reactor, description: str):
    """
    The server endpoint for C{description}, and its L{ReloadableCertificate} if it is an
    C{ssl:} one (else None): C{(endpoint, certificate)}.

    The C{ssl:} options Twisted documents are kept (port, interface, backlog,
    privateKey, certKey, extraCertChain); C{sslmethod} and C{dhParameters} are not
    reloaded and are refused, so that none is dropped without a word.
    """
    args, kwargs = parse_description(description)
    if not args or args[0] != "ssl":
        return endpoints.serverFromString(reactor, description), None
    unsupported = set(kwargs) - {"port", "interface", "backlog", "privateKey", "certKey",
                                 "extraCertChain"}
    if unsupported:
        raise ValueError(f"ssl: option(s) {', '.join(sorted(unsupported))} not supported here")
    port = int(args[1] if len(args) > 1 else kwargs["port"])
    certificate = ReloadableCertificate(
        kwargs.get("privateKey", "server.pem"), kwargs.get("certKey"),
        kwargs.get("extraCertChain"))
    endpoint = endpoints.SSL4ServerEndpoint(
        reactor, port, certificate, backlog=int(kwargs.get("backlog", 50)),
        interface=kwargs.get("interface", ""))
    return endpoint, certificate
