"""Real mail clients for the lab tests: TLS verified against the lab CA by host name, a small
ManageSieve client, an SMTP sink that stands in for the Lists/Issue hosts, Maildir polling."""
import base64
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import threading
import time
import uuid
from email.message import EmailMessage


class NamedContext(ssl.SSLContext):
    """Verifies the lab CA *and* a host name while the clients connect to an IP address."""

    expected_name = None

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        return super().wrap_socket(sock, *args, server_hostname=self.expected_name, **kwargs)


def tls(lab, name):
    """A client TLS context that accepts only the lab CA's certificate for `name`."""
    context = NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=lab["ca_cert"])
    context.expected_name = name
    return context


def served_certificate(lab, port, name, starttls):
    """The DER certificate served on `port`, verified against the lab CA for `name`."""
    raw = socket.create_connection((lab["address"], port), timeout=30)
    if starttls:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        raw.sendall(b"EHLO tests.cacert.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        raw.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"220")
    with tls(lab, name).wrap_socket(raw) as conn:     # raises unless chain and name verify
        return conn.getpeercert(binary_form=True)


def message(sender, recipient, subject=None, body="Hello from the lab tests.\n"):
    """(marker, EmailMessage): the marker is unique and appears in subject and body."""
    marker = f"T-{uuid.uuid4().hex[:12]}"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"{subject or 'lab test'} {marker}"
    msg["Message-ID"] = f"<{marker}@tests.cacert.test>"
    msg.set_content(f"{body}{marker}\n")
    return marker, msg


def smtp_25(lab, starttls=True):
    smtp = smtplib.SMTP(lab["address"], lab["ports"]["smtp"], timeout=30)
    smtp.ehlo("tests.cacert.test")
    if starttls:
        smtp.starttls(context=tls(lab, lab["hostnames"]["email"]))
        smtp.ehlo("tests.cacert.test")
    return smtp


def submission(lab, account, port="submission"):
    """A logged-in submission client: STARTTLS on 587, or implicit TLS on 465 ("smtps")."""
    context = tls(lab, lab["hostnames"]["community"])
    if port == "smtps":
        smtp = smtplib.SMTP_SSL(lab["address"], lab["ports"]["smtps"], timeout=30,
                                context=context)
        smtp.ehlo("tests.cacert.test")
    else:
        smtp = smtplib.SMTP(lab["address"], lab["ports"]["submission"], timeout=30)
        smtp.ehlo("tests.cacert.test")
        smtp.starttls(context=context)
        smtp.ehlo("tests.cacert.test")
    smtp.login(account["email"], account["password"])
    return smtp


def imaps(lab, account):
    imap = imaplib.IMAP4_SSL(lab["address"], lab["ports"]["imaps"],
                             ssl_context=tls(lab, lab["hostnames"]["community"]), timeout=30)
    imap.login(account["email"], account["password"])
    return imap


def pop3s(lab, account):
    pop = poplib.POP3_SSL(lab["address"], lab["ports"]["pop3s"],
                          context=tls(lab, lab["hostnames"]["community"]), timeout=30)
    pop.user(account["email"])
    pop.pass_(account["password"])
    return pop


def deploy_failure(result, context=25):
    """What to show when a deploy failed: the lines around each error, not only the tail."""
    lines = (result.stdout + result.stderr).splitlines()
    shown = set()
    for i, line in enumerate(lines):
        if any(word in line for word in ("Error:", "error:", "rror in ", "Traceback", "atal")):
            shown.update(range(max(0, i - context), i + 3))
    if not shown:
        return "\n".join(lines[-60:])
    return "\n".join(lines[i] for i in sorted(shown) if i < len(lines))


def wait_for(predicate, timeout=60, interval=0.5, what="condition"):
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def maildir_files(ssh, lab, user, marker, folder=""):
    """Paths of the messages containing `marker` in <mail_root>/<user>/Maildir/<folder>."""
    path = f"{lab['mail_root']}/{user}/Maildir/{folder}"
    result = ssh(f"grep -rlF {marker} {path}/new {path}/cur 2>/dev/null", check=False)
    return result.stdout.split()


def wait_for_delivery(ssh, lab, user, marker, folder="", timeout=60):
    return wait_for(lambda: maildir_files(ssh, lab, user, marker, folder), timeout=timeout,
                    what=f"{marker} in {user}'s Maildir/{folder}")


def mail_log(ssh, pattern):
    """Lines of the container's mail log that contain `pattern`."""
    result = ssh(f"grep -hF -- {pattern} /var/log/mail.log /var/log/syslog 2>/dev/null; "
                 f"journalctl -q --no-pager -t postfix/smtp -t postfix/lmtp -t postfix/local "
                 f"-t postfix/cleanup -t postfix/qmgr -t postfix/smtpd 2>/dev/null "
                 f"| grep -F -- {pattern}", check=False)
    return result.stdout.splitlines()


class ManageSieve:
    """Just enough of RFC 5804: STARTTLS, AUTHENTICATE PLAIN, PUTSCRIPT, SETACTIVE, ..."""

    def __init__(self, lab, timeout=30):
        self.lab = lab
        self.sock = socket.create_connection((lab["address"], lab["ports"]["sieve"]),
                                             timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.capabilities = self._response()

    def _response(self):
        """Lines up to the final OK/NO/BYE; raises on NO/BYE."""
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            if not line and not lines:
                raise ConnectionError("ManageSieve server closed the connection")
            lines.append(line)
            word = line.split(" ", 1)[0].upper()
            if word == "OK":
                return lines
            if word in ("NO", "BYE"):
                raise ManageSieveError(line)

    def command(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self._response()

    def starttls(self):
        self.command("STARTTLS")
        context = tls(self.lab, self.lab["hostnames"]["community"])
        self.sock = context.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")
        self.capabilities = self._response()   # capabilities are sent again after TLS

    def authenticate(self, login, password):
        token = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        return self.command(f'AUTHENTICATE "PLAIN" "{token}"')

    def putscript(self, name, script):
        data = script.encode()
        self.sock.sendall(f'PUTSCRIPT "{name}" {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
        return self._response()

    def close(self):
        try:
            self.command("LOGOUT")
        except (ManageSieveError, ConnectionError, OSError):
            pass
        self.sock.close()


class ManageSieveError(Exception):
    pass


class SmtpSink:
    """A minimal SMTP server on the lab host that records what it is sent (no TLS offered)."""

    def __init__(self, address, port):
        self.server = socket.create_server((address, port), reuse_port=False)
        self.server.settimeout(0.5)
        self.received = []     # (mail_from, [rcpt], data)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            with conn:
                try:
                    self._session(conn)
                except OSError:
                    pass

    def _session(self, conn):
        conn.settimeout(30)
        reader = conn.makefile("rb")
        conn.sendall(b"220 sink.cacert.test ESMTP lab sink\r\n")
        mail_from, rcpts = None, []
        while True:
            line = reader.readline().decode(errors="replace").rstrip("\r\n")
            if not line:
                return
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                conn.sendall(b"250 sink.cacert.test\r\n")
            elif verb == "MAIL":
                mail_from, rcpts = line[10:].strip(), []
                conn.sendall(b"250 OK\r\n")
            elif verb == "RCPT":
                rcpts.append(line[8:].strip())
                conn.sendall(b"250 OK\r\n")
            elif verb == "DATA":
                conn.sendall(b"354 go ahead\r\n")
                data = []
                while True:
                    chunk = reader.readline()
                    if chunk in (b".\r\n", b".\n", b""):
                        break
                    data.append(chunk)
                self.received.append((mail_from, rcpts, b"".join(data).decode(errors="replace")))
                conn.sendall(b"250 queued\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 OK\r\n")

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()


def folder_state(imap, folder, run):
    """{uid: (subject, flags)} of this run's messages in `folder`, and its UIDVALIDITY."""
    typ, _ = imap.select(f'"{folder}"', readonly=True)
    assert typ == "OK", f"cannot select {folder}"
    uidvalidity = int(imap.response("UIDVALIDITY")[1][0])
    typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    messages = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        uid = int(re.search(rb"UID (\d+)", head).group(1))
        flags = re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split()
        subject = body.decode().split(":", 1)[1].strip()
        if run in subject:
            messages[uid] = (subject, sorted(f for f in flags if f != "\\Recent"))
    return uidvalidity, messages


def delivered(ssh, root, user, run):
    """{subject: [delivery time taken from the Maildir name, ...]} for this run's mail."""
    out = ssh(f"cd {root}/{user}/Maildir && grep -rH -m1 '^Subject: ' new cur 2>/dev/null",
              check=False).stdout
    found = {}
    for line in out.splitlines():
        path, _, subject = line.partition(":Subject: ")
        if run not in subject:
            continue
        name = path.rsplit("/", 1)[-1]
        seconds, _, rest = name.partition(".M")
        micro = re.match(r"\d+", rest)
        found.setdefault(subject.strip(), []).append(
            int(seconds) + (int(micro.group(0)) / 1e6 if micro else 0))
    return found


def mark_up(lab, alice, bob, run, folder):
    """IMAP state worth keeping across a move, an upgrade or a rebuild, on the four messages
    "before RUN i" each of alice and bob received: alice's first three get \\Seen,
    \\Flagged \\Answered and the keyword $Label1, the first two are copied into `folder`
    (made here), the fourth is expunged (a gap in the UIDs); bob's last gets \\Seen.
    Returns {(user, folder): folder_state} of those folders."""
    imap = imaps(lab, alice)
    imap.create(f'"{folder}"')
    imap.select("INBOX")
    _, data = imap.uid("SEARCH", None, f'SUBJECT "before {run}"')
    uids = data[0].split()
    imap.uid("STORE", uids[0], "+FLAGS", r"(\Seen)")
    imap.uid("STORE", uids[1], "+FLAGS", r"(\Flagged \Answered)")
    imap.uid("STORE", uids[2], "+FLAGS", "($Label1)")
    imap.uid("COPY", uids[0] + b"," + uids[1], f'"{folder}"')
    imap.uid("STORE", uids[3], "+FLAGS", r"(\Deleted)")
    imap.expunge()
    state = {("alice", "INBOX"): folder_state(imap, "INBOX", run),
             ("alice", folder): folder_state(imap, folder, run)}
    imap.logout()
    imap = imaps(lab, bob)
    imap.select("INBOX")
    _, data = imap.uid("SEARCH", None, f'SUBJECT "before {run}"')
    imap.uid("STORE", data[0].split()[-1], "+FLAGS", r"(\Seen)")
    state[("bob", "INBOX")] = folder_state(imap, "INBOX", run)
    imap.logout()
    return state
