"""Small real servers on loopback for the status command's probes: a line-protocol server that
greets like SMTP, IMAP, POP3 or ManageSieve and really upgrades to TLS on STARTTLS (or speaks
TLS from the first byte), a server that accepts and never answers, and a UDP DNS server
answering from a table (dnspython builds the messages).

They stand in for Postfix, Dovecot and a zone's name server, which need root, their packages
and a whole configuration: the probes only see the bytes of the dialogue, and those are real
here. The lab tests (tests/lab/test_status.py) run the same command against the real daemons.
"""
import socket
import ssl
import threading

import dns.message
import dns.rcode
import dns.rrset

GREETINGS = {
    "smtp": ["220 {name} ESMTP"],
    "imap": ["* OK [CAPABILITY IMAP4rev1] ready"],
    "pop3": ["+OK ready"],
    "sieve": [],
}


class _Server:
    def __init__(self, sock):
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle_safely, args=(conn,), daemon=True).start()

    def _handle_safely(self, conn):
        try:
            conn.settimeout(10)
            self.handle(conn)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _listen():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def tls_context(chain_pem_path, key_pem_path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_pem_path, key_pem_path)
    return context


class MailServer(_Server):
    """`protocol` "smtp" | "imap" | "pop3" | "sieve" (STARTTLS offered unless
    `starttls=False`) or "tls" (TLS at once); `capabilities` are the lines or words it
    announces before TLS besides STARTTLS; `name` goes into the SMTP banner and EHLO reply."""

    def __init__(self, protocol, context=None, name="email.cacert.test", capabilities=(),
                 starttls=True):
        self.protocol, self.context, self.name = protocol, context, name
        self.capabilities, self.starttls = list(capabilities), starttls
        super().__init__(_listen())

    def handle(self, conn):
        if self.protocol == "tls":
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
            return
        reader = conn.makefile("rb")

        def send(*lines):
            conn.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

        def upgrade():
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        p, caps = self.protocol, self.capabilities
        stls = ["STARTTLS"] if self.starttls else []
        if p == "sieve":
            send(*[f'"{c}"' if " " not in c else c for c in caps + stls], "OK ready")
        else:
            send(*[g.format(name=self.name) for g in GREETINGS[p]])
        while True:
            line = reader.readline(4096).decode().strip()
            if not line:
                return
            words = line.split()
            verb = (words[1] if p == "imap" else words[0]).upper()
            tag = words[0] + " " if p == "imap" else ""
            if verb == "EHLO":
                ext = caps + stls
                send(*([f"250-{self.name}"] + [f"250-{e}" for e in ext[:-1]]
                       + [f"250 {ext[-1]}"] if ext else [f"250 {self.name}"]))
            elif verb == "CAPABILITY":
                send("* CAPABILITY " + " ".join(["IMAP4rev1"] + caps + stls), f"{tag}OK done")
            elif verb == "CAPA":
                send("+OK", *(caps + (["STLS"] if self.starttls else [])), ".")
            elif verb in ("STARTTLS", "STLS") and self.starttls:
                send({"smtp": "220 go ahead", "imap": f"{tag}OK begin", "pop3": "+OK begin",
                      "sieve": "OK begin"}[p])
                upgrade()
                return
            elif verb in ("QUIT", "LOGOUT"):
                send({"smtp": "221 bye", "imap": f"{tag}OK bye", "pop3": "+OK bye",
                      "sieve": "OK bye"}[p])
                return
            else:
                send({"smtp": "502 no", "imap": f"{tag}BAD no", "pop3": "-ERR no",
                      "sieve": "NO no"}[p])


class SilentServer(_Server):
    """Accepts connections and never says a word (a hung daemon)."""

    def __init__(self):
        self.release = threading.Event()
        super().__init__(_listen())

    def handle(self, conn):
        self.release.wait(30)

    def close(self):
        self.release.set()
        super().close()


def closed_port():
    """A loopback port nobody listens on (connections are refused)."""
    sock = _listen()
    port = sock.getsockname()[1]
    sock.close()
    return port


class DnsServer:
    """A UDP name server on 127.0.0.1 answering from `records`: {(name, type): [rdata text]}
    (names absolute); a name not in the table is NXDOMAIN, a known name without that type an
    empty answer."""

    def __init__(self, records):
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            question = query.question[0]
            name, rtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
            response = dns.message.make_response(query)
            if (name, rtype) in self.records:
                response.answer.append(dns.rrset.from_text_list(
                    name, 300, "IN", rtype, self.records[name, rtype]))
            elif not any(n == name for n, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self):
        self.sock.close()
