"""Facts that READ the live, Puppet-era mail server (and its LXC host) for `operations.adopt`.

Every fact here only reads: its command is `cat`, `stat`, `getent`, `postconf -h`/`-n`,
`doveconf -n`/`-h`, `openssl x509 -noout` or a SELECT over the MariaDB socket, and writes
nothing on the host (tests/unit/deploy/test_adopt_facts.py checks every command for that). A
password hash never leaves the server: the users fact returns each login's scheme name only.

The parsers are pure functions of the commands' text, so they are tested with captured
outputs; the FactBase classes wrap them in pyinfra's fact style.
"""
import posixpath
import re
import shlex

from pyinfra.api import FactBase

# A file that is not there prints this line instead of its content.
MISSING = "@@missing@@"

# Password schemes Dovecot 2.4 refuses unless auth_allow_weak_schemes = yes (the `.weak`
# flag of its built-in and crypt schemes, src/lib-auth/password-scheme*.c, and the "Password
# Schemes" page of its documentation): the MD4/MD5 family and DES crypt.
DOVECOT24_WEAK_SCHEMES = ("MD5", "MD5-CRYPT", "SMD5", "HMAC-MD5", "PLAIN-MD4", "PLAIN-MD5",
                          "LDAP-MD5", "DES-CRYPT")
# Cleartext schemes: not refused by that switch, but the password is stored as it is typed.
CLEARTEXT_SCHEMES = ("PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC")

# --- pure parsers ----------------------------------------------------------------------------


def _logical_lines(text):
    """Lines of a Postfix-style file: comments and blank lines dropped, lines that start with
    whitespace joined to the one before (Postfix's continuation rule)."""
    lines = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0] in " \t" and lines:
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw.strip())
    return lines


def parse_aliases(text):
    """/etc/aliases as {name: target} (targets as written, continuation lines joined)."""
    aliases = {}
    for line in _logical_lines(text):
        name, sep, target = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"/etc/aliases: not `name: target`: {line!r}")
        aliases[name.strip()] = " ".join(target.split())
    return aliases


def parse_regexp_map(text):
    """A Postfix regexp: table as ([{"match": regexp without slashes, "to": result}], problems).

    Lines the inventory's shape cannot hold (flags such as /i, if/endif blocks, other
    delimiters) are returned as problems, one line each, instead of being dropped silently.
    """
    rules, problems = [], []
    for line in _logical_lines(text):
        match = re.match(r"^/(.*)/([A-Za-z]*)\s+(\S.*)$", line)
        if not match:
            problems.append(f"rule not kept (not /regexp/ result): {line}")
        elif match.group(2):
            problems.append(f"rule not kept (flags {match.group(2)!r} are not supported): {line}")
        else:
            rules.append({"match": match.group(1), "to": match.group(3).strip()})
    return rules, problems


def parse_hash_map(text):
    """A Postfix hash: table's source file as {key: value}."""
    entries = {}
    for line in _logical_lines(text):
        fields = line.split(None, 1)
        if len(fields) != 2:
            raise ValueError(f"map line without a value: {line!r}")
        entries[fields[0]] = " ".join(fields[1].split())
    return entries


# Shown instead of a value that may hold a secret (see `_redacted`).
NOT_SHOWN = "(not shown)"


def _redacted(name, value):
    """`value`, unless the setting may hold a secret: a name with "password" or "secret"
    in it (e.g. Dovecot 2.4's mysql password), or a connect string with password=..."""
    last = name.rsplit("/", 1)[-1].lower()
    if ("password" in last or "secret" in last) and not value.startswith(("/", "<", "#")) \
            and ":/" not in value:
        return NOT_SHOWN
    return re.sub(r"(password\s*=\s*)\S+", r"\1" + NOT_SHOWN, value, flags=re.I)


def parse_postconf(text):
    """`postconf -n` (or a main.cf) as {parameter: value}, whitespace of values normalised;
    a value that may hold a secret is replaced by NOT_SHOWN."""
    settings = {}
    for line in _logical_lines(text):
        name, sep, value = line.partition("=")
        if sep:
            settings[name.strip()] = _redacted(name.strip(), " ".join(value.split()))
    return settings


def parse_doveconf(text):
    """`doveconf -n` (or a dovecot.conf) as a flat {"section path/setting": value}; a value
    that may hold a secret is replaced by NOT_SHOWN.

    Sections are named by their header ("service lmtp/unix_listener /var/.../dovecot-lmtp/mode");
    a header repeated at one level (two `passdb {` of Dovecot 2.3) gets " #2", " #3".
    """
    settings, path, seen = {}, [], [{}]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("!include"):
            continue
        if line.endswith("{"):
            header = " ".join(line[:-1].split())
            count = seen[-1].get(header, 0) + 1
            seen[-1][header] = count
            path.append(header if count == 1 else f"{header} #{count}")
            seen.append({})
        elif line == "}":
            if path:
                path.pop()
                seen.pop()
        else:
            name, sep, value = line.partition("=")
            if sep:
                key = "/".join(path + [name.strip()])
                settings[key] = _redacted(key, " ".join(value.split()).strip('"').strip())
    return settings


# Keys of an LXC config that files/infra02/lxc.conf.j2 writes itself.
LXC_MANAGED_KEYS = ("lxc.include", "lxc.rootfs.path", "lxc.uts.name", "lxc.arch",
                    "lxc.tty.max", "lxc.pty.max", "lxc.start.auto")


def parse_lxc_config(text):
    """An LXC config as {"nets": [{index, name, link, hwaddr, ipv4: [..], ipv4_gateway, ipv6:
    [..], ipv6_gateway, type, flags}], "mounts": [{source, target, type, options, line}],
    "other": [[key, value]] (every other key, in order), "comments": [lines]}."""
    nets, mounts, other, comments = {}, [], [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line)
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ValueError(f"LXC config: not `key = value`: {line!r}")
        net = re.match(r"^lxc\.net\.(\d+)\.(.+)$", key)
        if net:
            entry = nets.setdefault(int(net.group(1)), {
                "index": int(net.group(1)), "name": None, "link": None, "hwaddr": None,
                "ipv4": [], "ipv4_gateway": None, "ipv6": [], "ipv6_gateway": None,
                "type": None, "flags": None})
            field = net.group(2)
            if field in ("ipv4.address", "ipv6.address"):
                entry[field.split(".")[0]].append(value)
            elif field in ("ipv4.gateway", "ipv6.gateway"):
                entry[field.replace(".", "_")] = value
            elif field in ("name", "link", "hwaddr", "type", "flags"):
                entry[field] = value
            else:
                other.append([key, value])
        elif key == "lxc.mount.entry":
            fields = value.split()
            if len(fields) < 4:
                raise ValueError(f"LXC config: mount entry with fewer than 4 fields: {line!r}")
            mounts.append({"source": fields[0], "target": fields[1], "type": fields[2],
                           "options": fields[3], "line": value})
        else:
            other.append([key, value])
    return {"nets": [nets[i] for i in sorted(nets)], "mounts": mounts, "other": other,
            "comments": comments}


def _nic(entry):
    """One NIC of `parse_lxc_config` in the inventory's container_net shape."""
    return {
        "link": entry["link"],
        "hwaddr": entry["hwaddr"],
        "ipv4": entry["ipv4"][0] if entry["ipv4"] else None,
        "ipv4_gateway": entry["ipv4_gateway"],
        "ipv6": entry["ipv6"][0] if entry["ipv6"] else None,
        "ipv6_gateway": entry["ipv6_gateway"],
    }


def lxc_inventory(parsed, data_volume):
    """container_net, container_extra_nets, container_mounts and problems from a parsed config.

    + data_volume: where the inventory's data volume appears in the container (its mount
      entry is the deploy's own, not an extra one)
    """
    problems = []
    nets = parsed["nets"]
    eth0 = next((n for n in nets if n["name"] == "eth0"), nets[0] if nets else None)
    for entry in nets:
        for family in ("ipv4", "ipv6"):
            if len(entry[family]) > 1:
                problems.append(f"NIC {entry['name'] or entry['index']}: only the first "
                                f"{family} address is kept of {', '.join(entry[family])}")
        if entry["type"] not in (None, "veth"):
            problems.append(f"NIC {entry['name'] or entry['index']} is of type "
                            f"{entry['type']}: the deploy writes veth NICs")
    extra = []
    for entry in nets:
        if entry is eth0:
            continue
        extra.append({"name": entry["name"] or f"eth{entry['index']}", **_nic(entry)})
    target = (data_volume or "").strip("/")
    mounts = [{k: m[k] for k in ("source", "target", "type", "options")}
              for m in parsed["mounts"] if m["target"].strip("/") != target]
    return {
        "container_net": _nic(eth0) if eth0 else None,
        "container_extra_nets": extra,
        "container_mounts": mounts,
    }, problems


def lxc_unmanaged_keys(parsed):
    """[key, value] pairs the deploy's config template does not write (kept by a merge)."""
    return [kv for kv in parsed["other"] if kv[0] not in LXC_MANAGED_KEYS]


def parse_schema_rows(text):
    """information_schema rows "table<TAB>TABLE_TYPE<TAB>column<TAB>column type" as
    {name: {"kind": "table"|"view", "columns": [column, ...]}}."""
    tables = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        name, kind, column = fields[:3]
        entry = tables.setdefault(name, {"kind": "view" if kind == "VIEW" else "table",
                                         "columns": []})
        entry["columns"].append(column)
    return tables


def parse_grant_rows(text):
    """information_schema privilege rows "grantee<TAB>object<TAB>privilege" as
    {grantee: sorted ["PRIVILEGE on object", ...]} (object "*" for the whole database)."""
    grants = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        grantee, obj, privilege = fields
        grants.setdefault(grantee.replace("'", ""), set()).add(f"{privilege} on {obj}")
    return {grantee: sorted(items) for grantee, items in sorted(grants.items())}


def parse_scheme_rows(text):
    """Rows "login<TAB>scheme<TAB>active" (see `UserSchemes`) as {"counts": {scheme: n},
    "weak": {scheme: [login]}, "cleartext": [login], "users": n, "active": n}."""
    counts, weak, cleartext, users, active = {}, {}, [], 0, 0
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        login, scheme, is_active = fields
        users += 1
        active += is_active.strip() == "1"
        counts[scheme] = counts.get(scheme, 0) + 1
        if scheme in DOVECOT24_WEAK_SCHEMES:
            weak.setdefault(scheme, []).append(login)
        if scheme in CLEARTEXT_SCHEMES:
            cleartext.append(login)
    return {"counts": dict(sorted(counts.items())),
            "weak": {s: sorted(logins) for s, logins in sorted(weak.items())},
            "cleartext": sorted(cleartext), "users": users, "active": active}


def parse_getent_passwd(line):
    """{"user", "uid", "gid", "home"} from one `getent passwd` line, or None."""
    fields = line.strip().split(":")
    if len(fields) < 7:
        return None
    return {"user": fields[0], "uid": int(fields[2]), "gid": int(fields[3]), "home": fields[5]}


def parse_owner_rows(text):
    """`stat -c '%u:%g %n'` lines of Maildirs as {"uid:gid": [mailbox, ...]}."""
    owners = {}
    for line in text.splitlines():
        owner, _, path = line.partition(" ")
        if not path:
            continue
        mailbox = posixpath.basename(posixpath.dirname(path.rstrip("/")))
        owners.setdefault(owner, []).append(mailbox)
    return {owner: sorted(boxes) for owner, boxes in sorted(owners.items())}


def parse_certificates(text):
    """Blocks "== service path" followed by `openssl x509 -noout -subject -enddate -ext
    subjectAltName` (or MISSING) as [{"service", "path", "subject", "names", "not_after"}]."""
    certs, current = [], None
    for line in text.splitlines():
        if line.startswith("== "):
            service, _, path = line[3:].partition(" ")
            current = {"service": service, "path": path.strip(), "subject": None,
                       "names": [], "not_after": None, "missing": False}
            certs.append(current)
        elif current is None:
            continue
        elif line.strip() == MISSING:
            current["missing"] = True
        elif line.startswith("subject="):
            current["subject"] = line[len("subject="):].strip()
        elif line.startswith("notAfter="):
            current["not_after"] = line[len("notAfter="):].strip()
        elif "DNS:" in line:
            current["names"] += [n.strip()[4:] for n in line.split(",")
                                 if n.strip().startswith("DNS:")]
    return certs


def mail_root_of(mail_location):
    """The directory above the users' Maildirs in a Dovecot mail_location, or None.

    "maildir:/home/mailboxes/%n/Maildir" -> "/home/mailboxes"; "maildir:~/Maildir" -> None
    (then homes come from the userdb and the inventory's mail_root is kept).
    """
    path = (mail_location or "").split(":", 1)[-1].split(":", 1)[0]
    if not path.startswith("/") or "%" not in path:
        return None
    return posixpath.normpath(path.split("%", 1)[0]) or None


# --- facts -----------------------------------------------------------------------------------


# A file that exists but the SSH user may not read prints this, then its path.
UNREADABLE = "@@unreadable@@"


def _cat(path):
    quoted = shlex.quote(path)
    return (f"if [ ! -e {quoted} ]; then echo '{MISSING}'; elif [ ! -r {quoted} ]; then "
            f"echo '{UNREADABLE}' {quoted}; else cat {quoted}; fi")


def _text(output):
    """The text of a `_cat`, None for a missing file; ValueError for an unreadable one."""
    lines = list(output)
    if lines and lines[0].strip() == MISSING:
        return None
    if lines and lines[0].startswith(UNREADABLE):
        raise ValueError(f"{lines[0][len(UNREADABLE):].strip()} is not readable by the SSH "
                         "user: connect as root or set _sudo for that host")
    return "\n".join(lines) + "\n"


class _MappingFact(FactBase):
    """A fact whose value is a mapping: {} when the command printed nothing."""

    @staticmethod
    def default():
        return {}


class FileText(FactBase):
    """A file's text (read with `cat`), or None if it does not exist."""

    def command(self, path):
        return _cat(path)

    def process(self, output):
        return _text(output)


class EtcAliases(FactBase):
    """/etc/aliases as {name: target}, or None if the file does not exist."""

    def command(self, path="/etc/aliases"):
        return _cat(path)

    def process(self, output):
        text = _text(output)
        return None if text is None else parse_aliases(text)


class PostconfSettings(_MappingFact):
    """`postconf -n`: the parameters main.cf sets, {name: value} ({} without Postfix)."""

    def command(self):
        return "postconf -n 2>/dev/null; true"

    def process(self, output):
        return parse_postconf("\n".join(output))


class DoveconfSettings(_MappingFact):
    """`doveconf -n` flattened ({"section/setting": value}, see `parse_doveconf`); secrets
    are printed as "# hidden" by doveconf itself. {} without Dovecot."""

    def command(self):
        return "doveconf -n 2>/dev/null; true"

    def process(self, output):
        return parse_doveconf("\n".join(output))


class PostconfValues(_MappingFact):
    """The values Postfix uses for `names` (set or default: `postconf NAME...`), {name: value}."""

    def command(self, names):
        return f"postconf {' '.join(shlex.quote(n) for n in names)} 2>/dev/null; true"

    def process(self, output):
        return parse_postconf("\n".join(output))


class DoveconfValues(_MappingFact):
    """The values Dovecot uses for the top-level settings `names` (set or default:
    `doveconf -h NAME`), {name: value}; names Dovecot does not know are left out."""

    def command(self, names):
        quoted = " ".join(shlex.quote(n) for n in names if "/" not in n)
        return (f"for k in {quoted}; do v=$(doveconf -h \"$k\" 2>/dev/null) && "
                "echo \"$k = $v\"; done; true")

    def process(self, output):
        return parse_postconf("\n".join(output))


class DovecotSqlDefaultScheme(FactBase):
    """default_pass_scheme of Dovecot's SQL passdb file `path` (only that line is read: the
    file also holds a password), or None."""

    def command(self, path):
        return (f"grep -hs '^[[:space:]]*default_pass_scheme' {shlex.quote(path)}; true")

    def process(self, output):
        for line in output:
            return line.split("=", 1)[-1].strip() or None
        return None


class LxcConfig(FactBase):
    """The parsed config of LXC container `container` on its host (see `parse_lxc_config`),
    or None if the container has none."""

    def command(self, container, lxc_path="/var/lib/lxc"):
        return _cat(f"{lxc_path}/{container}/config")

    def process(self, output):
        text = _text(output)
        return None if text is None else parse_lxc_config(text)


def _mysql(sql):
    """A read-only query as root over the local socket; SQL on stdin (quoted heredoc)."""
    return ("{ command -v mariadb >/dev/null && c=mariadb || c=mysql; "
            "$c --batch --skip-column-names <<'SQL'\n" + sql + "\nSQL\n"
            f"}} 2>/dev/null || echo '{MISSING}'")


def _rows(output):
    """The rows of a `_mysql` query, or None when the query failed (no such database)."""
    text = _text(output)
    return text


class DatabaseTables(_MappingFact):
    """Tables and views of `database` with their columns (information_schema), {} if none."""

    def command(self, database):
        db = database.replace("'", "")
        return _mysql(
            "SELECT t.TABLE_NAME, t.TABLE_TYPE, c.COLUMN_NAME, c.COLUMN_TYPE "
            "FROM information_schema.TABLES t JOIN information_schema.COLUMNS c "
            "ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME "
            f"WHERE t.TABLE_SCHEMA = '{db}' ORDER BY t.TABLE_NAME, c.ORDINAL_POSITION;")

    def process(self, output):
        rows = _rows(output)
        return None if rows is None else parse_schema_rows(rows)


class DatabaseGrants(_MappingFact):
    """Who may do what in `database`: {grantee: ["SELECT on view", ...]} (information_schema:
    no password hash is read)."""

    def command(self, database):
        db = database.replace("'", "")
        return _mysql(
            "SELECT GRANTEE, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
            f"WHERE TABLE_SCHEMA = '{db}' UNION ALL "
            "SELECT GRANTEE, '*', PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES "
            f"WHERE TABLE_SCHEMA = '{db}';")

    def process(self, output):
        rows = _rows(output)
        return None if rows is None else parse_grant_rows(rows)


# The scheme of each users row, worked out inside MariaDB: "{SCHEME}..." names it; a bare
# crypt string is named by its $id$; the hash itself is never selected.
_SCHEME_SQL = (
    "SELECT login, CASE "
    "WHEN password LIKE '{%}%' THEN UPPER(SUBSTRING_INDEX(SUBSTRING(password, 2), '}', 1)) "
    "WHEN password LIKE '$1$%' THEN 'MD5-CRYPT' "
    "WHEN password LIKE '$5$%' THEN 'SHA256-CRYPT' "
    "WHEN password LIKE '$6$%' THEN 'SHA512-CRYPT' "
    "WHEN password LIKE '$2_$%' THEN 'BLF-CRYPT' "
    "WHEN password = '' THEN '(empty)' "
    "ELSE '(no prefix)' END, active FROM `{table}` ORDER BY login;")


class UserSchemes(FactBase):
    """Password scheme per user of `database`.users, counted (see `parse_scheme_rows`);
    the hashes stay in the database: only scheme names leave it."""

    def command(self, database, table="users"):
        return _mysql(f"USE `{database.replace('`', '')}`;\n"
                      + _SCHEME_SQL.replace("{table}", table.replace("`", "")))

    @staticmethod
    def default():
        return parse_scheme_rows("")

    def process(self, output):
        rows = _rows(output)
        return None if rows is None else parse_scheme_rows(rows)


class VmailOwners(FactBase):
    """{"vmail": getent passwd of `user` or None, "owners": {"uid:gid": [mailbox]}} for the
    Maildirs <mail_root>/*/Maildir."""

    def command(self, mail_root, user="vmail"):
        root = shlex.quote(mail_root.rstrip("/"))
        return (f"echo \"user $(getent passwd {shlex.quote(user)})\"; "
                f"for d in {root}/*/Maildir; do [ -d \"$d\" ] && stat -c '%u:%g %n' \"$d\"; "
                "done; true")

    def process(self, output):
        lines = list(output)
        vmail = None
        if lines and lines[0].startswith("user "):
            vmail = parse_getent_passwd(lines[0][5:])
            lines = lines[1:]
        return {"vmail": vmail, "owners": parse_owner_rows("\n".join(lines))}


class TlsCertificates(FactBase):
    """The certificates Postfix, Dovecot and nginx point at: names and expiry, read with
    `openssl x509 -noout` from the public files only (never the keys)."""

    def command(self):
        return (
            "{ for p in $(postconf -h smtpd_tls_cert_file smtp_tls_cert_file 2>/dev/null); do "
            "echo \"postfix $p\"; done; "
            "for p in $(doveconf -h ssl_cert 2>/dev/null || doveconf -h ssl_server_cert_file "
            "2>/dev/null); do echo \"dovecot ${p#<}\"; done; "
            "grep -rhsE '^[[:space:]]*ssl_certificate[[:space:]]' /etc/nginx/ | "
            "sed -E 's/^[[:space:]]*ssl_certificate[[:space:]]+([^;]+);.*/nginx \\1/'; } | "
            "sort -u | while read -r who path; do [ -n \"$path\" ] || continue; "
            "echo \"== $who $path\"; if [ -f \"$path\" ]; then "
            "openssl x509 -noout -subject -enddate -ext subjectAltName -in \"$path\" 2>/dev/null; "
            f"else echo '{MISSING}'; fi; done; true")

    @staticmethod
    def default():
        return []

    def process(self, output):
        return parse_certificates("\n".join(output))
