"""Network probes of a mail host from the control machine: TCP reachability, the plaintext
dialogue of SMTP, IMAP, POP3 and ManageSieve up to STARTTLS, and the certificate a TLS port
serves. No inventory here: operations/network_checks.py decides what the answers mean.

Every socket has a timeout, so no probe waits longer than `timeout` seconds for one answer
(and reads a bounded number of lines). Nothing is sent that a server could count as a failed
login: the "no AUTH without TLS" facts come from the capabilities the server announces, not
from trying a password (Dovecot's fail2ban filter counts "tried to use disallowed plaintext
auth" as a failure, and the status command must never get its own operator banned).
"""
import socket
import ssl
from dataclasses import dataclass, field

# The plaintext dialogue of each protocol, and the ones reached with TLS from the first byte.
STARTTLS_PROTOCOLS = ("smtp", "imap", "pop3", "sieve")
IMPLICIT_TLS = "tls"
# The EHLO name the probe introduces itself with (a reserved, never-resolving name).
EHLO_NAME = "status-probe.invalid"
MAX_LINES = 200


class ProbeError(Exception):
    """The server could not be reached or answered outside its protocol; the message says
    what happened, e.g. "connection refused" or "no answer within 10s"."""


def _describe(exc, timeout):
    if isinstance(exc, ProbeError):
        return str(exc)
    if isinstance(exc, socket.timeout):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) \
        else str(exc)


def connect(address, port, timeout, source=None):
    """A TCP connection to address:port (from `source` if given), with `timeout` on every
    operation; OSError (ConnectionRefusedError, socket.timeout, ...) when it fails."""
    return socket.create_connection((address, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def reachability(address, port, timeout, source=None, attempts=2):
    """("open" | "refused" | "timeout" | "error", detail) of a TCP connection attempt.

    A connection that gets no answer at all is tried once more: the first packets from a
    source the server has not talked to yet may be lost while its neighbour entry is
    resolved (seen in the lab: 2 s and more from a fresh secondary address), and a lost
    packet is not a filtered port. A port that drops everything still fails, after
    `attempts` times `timeout`."""
    for _ in range(attempts):
        try:
            sock = connect(address, port, timeout, source)
        except ConnectionRefusedError:
            return "refused", "connection refused"
        except socket.timeout:
            continue
        except OSError as exc:
            return "error", _describe(exc, timeout)
        with sock:
            return "open", f"connected from {sock.getsockname()[0]}"
    return "timeout", (f"no answer within {timeout:g}s" +
                       (f" ({attempts} attempts)" if attempts > 1 else ""))


def local_address(address, port, source=None):
    """The address this machine speaks from to reach address:port (`source` when given).

    A UDP socket's connect() picks the route's source address without sending anything."""
    if source:
        return source
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((address, port))
        except OSError:
            return None
        return sock.getsockname()[0]


class _Lines:
    """Line reading over a socket (CRLF-terminated, bounded)."""

    def __init__(self, sock):
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, text):
        self.sock.sendall(text.encode("ascii") + b"\r\n")

    def line(self):
        raw = self.file.readline(4096)
        if not raw:
            raise ProbeError("the server closed the connection")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def until(self, done):
        """Lines up to and including the first for which `done(line)` is true."""
        lines = []
        for _ in range(MAX_LINES):
            lines.append(self.line())
            if done(lines[-1]):
                return lines
        raise ProbeError(f"no end of answer after {MAX_LINES} lines")


def _smtp_reply(lines):
    """The lines of one SMTP reply (multi-line: `250-...` up to `250 ...`)."""
    return lines.until(lambda line: len(line) < 4 or line[3] != "-")


@dataclass
class Greeting:
    """What a server says before TLS: its banner, its capabilities (upper case, one entry per
    announced line or word as the protocol lists them) and, for SMTP, the EHLO reply's name."""
    protocol: str
    banner: str
    capabilities: list = field(default_factory=list)
    ehlo_name: str = None

    @property
    def starttls(self):
        return any(c.split()[0] in ("STARTTLS", "STLS", '"STARTTLS"')
                   for c in self.capabilities if c)

    def auth_without_tls(self):
        """The ways to log in the server offers before TLS ([] when it offers none)."""
        if self.protocol == "smtp":
            return [c for c in self.capabilities if c.split()[0] == "AUTH"]
        if self.protocol == "imap":
            offered = [c for c in self.capabilities if c.startswith("AUTH=")]
            return offered + ([] if "LOGINDISABLED" in self.capabilities else ["LOGIN"])
        if self.protocol == "pop3":
            return [c for c in self.capabilities
                    if c == "USER" or (c.startswith("SASL") and len(c.split()) > 1)]
        if self.protocol == "sieve":
            return [c for c in self.capabilities if c.startswith('"SASL"') and c != '"SASL" ""']
        return []


def _greet(lines, protocol):
    """Read the greeting and the capabilities; leaves the dialogue where STARTTLS may follow."""
    if protocol == "smtp":
        reply = _smtp_reply(lines)
        if not reply[0].startswith("220"):
            raise ProbeError(f"SMTP greeting is not 220: {reply[0]!r}")
        banner = reply[0][4:]
        lines.send(f"EHLO {EHLO_NAME}")
        ehlo = _smtp_reply(lines)
        if not ehlo[0].startswith("250"):
            raise ProbeError(f"EHLO refused: {ehlo[0]!r}")
        return Greeting("smtp", banner, [line[4:].upper() for line in ehlo[1:]],
                        ehlo_name=ehlo[0][4:].split()[0] if ehlo[0][4:].strip() else "")
    if protocol == "imap":
        banner = lines.line()
        if not banner.startswith("* OK"):
            raise ProbeError(f"IMAP greeting is not * OK: {banner!r}")
        lines.send("s1 CAPABILITY")
        reply = lines.until(lambda line: line.startswith("s1 "))
        caps = [w.upper() for line in reply if line.upper().startswith("* CAPABILITY")
                for w in line.split()[2:]]
        return Greeting("imap", banner[5:], caps)
    if protocol == "pop3":
        banner = lines.line()
        if not banner.startswith("+OK"):
            raise ProbeError(f"POP3 greeting is not +OK: {banner!r}")
        lines.send("CAPA")
        first = lines.line()
        caps = lines.until(lambda line: line == ".")[:-1] if first.startswith("+OK") else []
        return Greeting("pop3", banner[4:], [c.upper() for c in caps])
    if protocol == "sieve":
        reply = lines.until(lambda line: line.upper().startswith(("OK", "NO", "BYE")))
        if not reply[-1].upper().startswith("OK"):
            raise ProbeError(f"ManageSieve greeting ends with {reply[-1]!r}")
        caps = [line.upper() for line in reply[:-1]]
        return Greeting("sieve", reply[-1][3:], caps)
    raise ValueError(f"no plaintext dialogue for protocol {protocol!r}")


def _starttls(lines, protocol):
    """Ask for TLS; ProbeError unless the server agrees."""
    command, ok = {"smtp": ("STARTTLS", "220"), "imap": ("s2 STARTTLS", "s2 OK"),
                   "pop3": ("STLS", "+OK"), "sieve": ("STARTTLS", "OK")}[protocol]
    lines.send(command)
    reply = _smtp_reply(lines)[-1] if protocol == "smtp" else lines.line()
    if not reply.upper().startswith(ok.upper()):
        raise ProbeError(f"{command.split()[-1]} refused: {reply!r}")


def _goodbye(lines, protocol):
    try:
        lines.send({"smtp": "QUIT", "imap": "s9 LOGOUT", "pop3": "QUIT",
                    "sieve": "LOGOUT"}[protocol])
    except OSError:
        pass


def greeting(address, port, protocol, timeout, source=None):
    """The `Greeting` of a plaintext port; ProbeError with what went wrong."""
    try:
        with connect(address, port, timeout, source) as sock:
            lines = _Lines(sock)
            result = _greet(lines, protocol)
            _goodbye(lines, protocol)
            return result
    except (OSError, ProbeError) as exc:
        raise ProbeError(_describe(exc, timeout)) from None


@dataclass
class TlsPeer:
    """The certificate a port served (DER) and why its chain failed to verify (None: it
    verified against the trust anchors given)."""
    certificate: bytes
    verify_error: str = None


def _handshake(address, port, protocol, server_name, context, timeout, source):
    sock = connect(address, port, timeout, source)
    try:
        if protocol != IMPLICIT_TLS:
            lines = _Lines(sock)
            _greet(lines, protocol)
            _starttls(lines, protocol)
        tls = context.wrap_socket(sock, server_hostname=server_name)
    except BaseException:
        sock.close()
        raise
    with tls:
        return tls.getpeercert(binary_form=True)


def tls_peer(address, port, protocol, server_name, timeout, ca_file=None, source=None):
    """The `TlsPeer` of a port: implicit TLS (`protocol` "tls") or STARTTLS ("smtp", "imap",
    "pop3", "sieve"), with SNI `server_name`; the chain is verified against `ca_file` (PEM)
    or, when None, the system's trust store. Names and dates are left to the caller.
    ProbeError when no handshake happened at all."""
    verifying = ssl.create_default_context(cafile=ca_file)
    verifying.check_hostname = False
    try:
        try:
            return TlsPeer(_handshake(address, port, protocol, server_name, verifying,
                                      timeout, source))
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or str(exc)
        # Fetch the certificate anyway, to say what is wrong with it besides its chain.
        anything = ssl.create_default_context()
        anything.check_hostname = False
        anything.verify_mode = ssl.CERT_NONE
        return TlsPeer(_handshake(address, port, protocol, server_name, anything, timeout,
                                  source), why)
    except (OSError, ProbeError) as exc:
        raise ProbeError(_describe(exc, timeout)) from None
