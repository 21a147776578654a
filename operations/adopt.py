"""Adopt the live, Puppet-era email server: read what it holds, READ-ONLY, as inventory data.

    python -m operations.adopt inventories/prod.py
    python -m operations.adopt inventories/prod.py --json
    python -m operations.adopt inventories/prod.py --write adopted.json
    python -m operations.adopt inventories/prod.py --drift [--json]

Connects (with the inventory's connection settings) to its `infra02` and `email` hosts and
only reads (operations/live_facts.py: cat, stat, getent, postconf, doveconf, openssl x509
-noout, SELECTs on information_schema): /etc/aliases, the arbitration, bcc and transport
maps, relayhost, the container's LXC config on Infra02 (NICs, mount entries, other keys),
the cacertusers tables, views, grants and the password scheme of each account (never a
hash), the vmail user and the owners of the Maildirs, the certificates' names and expiry,
and the settings of `postconf -n` and `doveconf -n`. Nothing is written on any host.

It prints a table per area (or --json). --write FILE writes the adopted inventory data: a
JSON object whose keys are inventory data (inventories/group_data/all.py's names and
shapes) and "_"-keys with the findings; inventories read it with inventories/adopted.py.
--drift reports instead what the first deploy of this inventory would change, per service
(operations/drift.py), again without writing anything.

Exit status: 0 when the report was made, 2 on bad usage or a bad inventory, 1 when a host
cannot be reached. Every error is one line.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

from operations import drift, live_facts as lf
from operations.text_table import table

# Map files the Puppet era kept beside main.cf (the names the deploy writes too).
ARBITRATION = "/etc/postfix/arbitration"
RECIPIENT_BCC = "/etc/postfix/cacert-inc-bcc"
TRANSPORT = "/etc/postfix/transport"
# Dovecot's SQL passdb file when doveconf does not name one.
SQL_CONF = "/etc/dovecot/dovecot-sql.conf.ext"
# Packages worth naming in the report (prefixes of Debian package names).
PACKAGE_PREFIXES = ("postfix", "dovecot", "mariadb", "mysql", "puppet", "nginx", "opendkim",
                    "icinga2", "fail2ban", "nftables")
# Warn about a certificate that expires within this many days.
CERT_WARN_DAYS = 30


class AdoptError(Exception):
    """A problem that stops the command: its message is the one line printed."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


# --- reading (every fact is read-only) -------------------------------------------------------

def read_email(host, data):
    """What the email host holds, as a dict (see the module docstring)."""
    from pyinfra.facts.deb import DebPackages

    get = host.get_fact
    postconf = get(lf.PostconfSettings)
    doveconf = get(lf.DoveconfSettings)
    arbitration = get(lf.FileText, path=ARBITRATION)
    bcc = get(lf.FileText, path=RECIPIENT_BCC)
    transport = get(lf.FileText, path=TRANSPORT)
    live = {
        "host": host.name,
        "etc_aliases": get(lf.EtcAliases),
        "arbitration": None if arbitration is None else lf.parse_regexp_map(arbitration),
        "recipient_bcc": None if bcc is None else lf.parse_hash_map(bcc),
        "transports": None if transport is None else lf.parse_hash_map(transport),
        "postconf": postconf,
        "doveconf": doveconf,
        # What Postfix and Dovecot use where the files set nothing (their defaults), for
        # the settings the drift report compares.
        "postconf_effective": {**get(lf.PostconfValues, names=drift.POSTFIX_SETTINGS),
                               **postconf},
        "doveconf_effective": {**get(lf.DoveconfValues, names=drift.DOVECOT_SETTINGS),
                               **doveconf},
        "default_pass_scheme": get(lf.DovecotSqlDefaultScheme,
                                   path=doveconf.get("passdb/args", SQL_CONF).split()[-1]),
        "tables": get(lf.DatabaseTables, database=data["mysql_database"]),
        "grants": get(lf.DatabaseGrants, database=data["mysql_database"]),
        "schemes": get(lf.UserSchemes, database=data["mysql_database"]),
        "certificates": get(lf.TlsCertificates),
        "packages": {name: sorted(versions) for name, versions in (get(DebPackages) or {}).items()
                     if name.startswith(PACKAGE_PREFIXES)},
    }
    mail_root = lf.mail_root_of(doveconf.get("mail_location")) or data["mail_root"]
    live["mail_root"] = mail_root
    live["vmail"] = get(lf.VmailOwners, mail_root=mail_root, user=data["vmail_user"])
    return live


def read_infra02(host, data):
    """The container's LXC config on Infra02."""
    return {"host": host.name, "container": data["container_name"],
            "lxc": host.get_fact(lf.LxcConfig, container=data["container_name"])}


# --- turning it into inventory data ----------------------------------------------------------

def _days_left(not_after, now):
    try:
        end = datetime.datetime.strptime(not_after, "%b %d %H:%M:%S %Y %Z")
    except (TypeError, ValueError):
        return None
    return (end.replace(tzinfo=datetime.timezone.utc) - now).days


def adopted_data(email, infra02, data, now):
    """The adopted inventory data (group_data/all.py's shapes) and "_"-keys with findings.

    + email, infra02: what `read_email` and `read_infra02` returned (infra02 may be None)
    + data: the inventory's data for the email host (defaults for what cannot be read)
    """
    findings = []
    adopted = {}
    if email["etc_aliases"] is None:
        findings.append("/etc/aliases is missing: etc_aliases not adopted")
    else:
        adopted["etc_aliases"] = email["etc_aliases"]
    if email["arbitration"] is None:
        findings.append(f"{ARBITRATION} is missing: arbitration_rewrites = []")
        adopted["arbitration_rewrites"] = []
    else:
        rules, problems = email["arbitration"]
        adopted["arbitration_rewrites"] = rules
        findings += [f"{ARBITRATION}: {p}" for p in problems]
    for key, path, value in (("recipient_bcc", RECIPIENT_BCC, email["recipient_bcc"]),
                             ("transports", TRANSPORT, email["transports"])):
        if value is None:
            findings.append(f"{path} is missing: {key} = {{}}")
        adopted[key] = value or {}
    postconf = email["postconf"]
    adopted["relayhost"] = postconf.get("relayhost") or None
    if postconf.get("mydomain"):
        adopted["mail_domain"] = postconf["mydomain"]
    for parameter, path in (("recipient_bcc_maps", RECIPIENT_BCC),
                            ("transport_maps", TRANSPORT)):
        if postconf and path not in postconf.get(parameter, ""):
            findings.append(f"postconf {parameter} = {postconf.get(parameter, '')!r} does not "
                            f"name {path}: check what Postfix really uses")
    if postconf and ARBITRATION not in " ".join(postconf.values()):
        findings.append(f"no postconf parameter names {ARBITRATION}: check where the "
                        "arbitration rules are used")

    adopted["mail_root"] = email["mail_root"]
    vmail, owners = email["vmail"]["vmail"], email["vmail"]["owners"]
    if vmail:
        adopted["vmail_uid"] = vmail["uid"]
        if vmail["uid"] != vmail["gid"]:
            findings.append(f"vmail has uid {vmail['uid']} but gid {vmail['gid']}: the deploy "
                            "uses one number for both (vmail_uid)")
    elif owners:
        owner = max(owners, key=lambda o: len(owners[o]))
        adopted["vmail_uid"] = int(owner.split(":")[0])
        findings.append(f"no user {data['vmail_user']}: vmail_uid taken from the Maildirs' "
                        f"owner {owner}")
    else:
        findings.append(f"no user {data['vmail_user']} and no Maildir: vmail_uid not adopted")
    if vmail:
        wanted = f"{vmail['uid']}:{vmail['gid']}"
        for owner, boxes in owners.items():
            if owner != wanted:
                findings.append(f"Maildirs owned by {owner}, not vmail {wanted}: "
                                f"{', '.join(boxes)}")

    schemes = email["schemes"]
    if schemes is None or email["tables"] is None:
        findings.append(f"database {data['mysql_database']} could not be read")
    else:
        for scheme, logins in schemes["weak"].items():
            findings.append(f"{len(logins)} account(s) with {scheme}, refused by Dovecot 2.4 "
                            f"(auth_allow_weak_schemes = no): {', '.join(logins)}")
        if schemes["cleartext"]:
            findings.append(f"cleartext passwords: {', '.join(schemes['cleartext'])}")
    for cert in email["certificates"]:
        if cert["missing"]:
            findings.append(f"{cert['service']} names certificate {cert['path']}, "
                            "which does not exist")
            continue
        days = _days_left(cert["not_after"], now)
        if days is not None and days < CERT_WARN_DAYS:
            findings.append(f"certificate {cert['path']} ({cert['service']}) expires in "
                            f"{days} day(s): {cert['not_after']}")
    if "puppet" in email["packages"] or "puppet-agent" in email["packages"]:
        findings.append("the Puppet agent is installed: the deploy stops and purges it "
                        "(operations/puppet.py)")

    if infra02 is not None:
        if infra02["lxc"] is None:
            findings.append(f"{infra02['host']}: container {infra02['container']} has no "
                            "LXC config")
        else:
            lxc, problems = lf.lxc_inventory(infra02["lxc"], data.get("data_volume"))
            adopted.update(lxc)
            findings += [f"LXC config: {p}" for p in problems]
    adopted["_source"] = {"email": email["host"],
                          "infra02": infra02["host"] if infra02 else None}
    adopted["_read_at"] = now.isoformat(timespec="seconds")
    adopted["_findings"] = findings
    adopted["_password_schemes"] = None if schemes is None else schemes["counts"]
    adopted["_weak_password_accounts"] = None if schemes is None else schemes["weak"]
    adopted["_lxc_unmanaged_keys"] = (lf.lxc_unmanaged_keys(infra02["lxc"])
                                     if infra02 and infra02["lxc"] else [])
    adopted["_certificates"] = [{k: c[k] for k in ("service", "path", "names", "not_after")}
                                for c in email["certificates"]]
    adopted["_packages"] = {n: v for n, v in sorted(email["packages"].items())}
    return adopted


# --- output ----------------------------------------------------------------------------------

# postconf/doveconf settings shown in the report: the ones the deploy's data derives from.
REPORT_POSTCONF = ("myhostname", "mydomain", "mydestination", "relayhost", "mynetworks",
                   "recipient_delimiter", "alias_maps", "virtual_alias_maps",
                   "recipient_bcc_maps", "transport_maps", "mailbox_transport",
                   "virtual_transport", "smtpd_tls_cert_file", "smtpd_sasl_type")
REPORT_DOVECONF = ("protocols", "mail_location", "mail_uid", "mail_gid", "first_valid_uid",
                   "passdb/driver", "passdb/args", "userdb/driver", "ssl_cert", "ssl_min_protocol")


def render_text(email, infra02, adopted):
    """The human report: one table per area."""
    parts = [table("/etc/aliases (etc_aliases)", sorted(adopted.get("etc_aliases", {}).items()),
                   ("name", "target")),
             table(f"{ARBITRATION} (arbitration_rewrites)",
                   [(r["match"], r["to"]) for r in adopted["arbitration_rewrites"]],
                   ("regexp", "to")),
             table(f"{RECIPIENT_BCC} (recipient_bcc)", sorted(adopted["recipient_bcc"].items()),
                   ("recipient", "copy to")),
             table(f"{TRANSPORT} (transports)", sorted(adopted["transports"].items()),
                   ("domain", "nexthop")),
             table("postconf -n (selected)",
                   [(k, email["postconf"].get(k, "(not set)")) for k in REPORT_POSTCONF]),
             table("doveconf -n (selected)",
                   [(k, email["doveconf"].get(k, "(not set)")) for k in REPORT_DOVECONF]
                   + [("default_pass_scheme (SQL)", email["default_pass_scheme"] or "(not set)")])]
    tables = email["tables"] or {}
    parts.append(table("cacertusers tables and views",
                       [(n, t["kind"], ", ".join(t["columns"])) for n, t in sorted(tables.items())],
                       ("name", "kind", "columns")))
    parts.append(table("grants on cacertusers",
                       [(g, ", ".join(p)) for g, p in (email["grants"] or {}).items()],
                       ("account", "privileges")))
    schemes = email["schemes"] or {"counts": {}, "weak": {}}
    parts.append(table("password schemes (count of accounts; hashes are never read out)",
                       [(s, n, ", ".join(schemes["weak"].get(s, [])) or "-")
                        for s, n in schemes["counts"].items()],
                       ("scheme", "accounts", "refused by Dovecot 2.4")))
    vmail = email["vmail"]
    parts.append(table(f"mail owner and Maildirs under {email['mail_root']}",
                       [("vmail user", json.dumps(vmail["vmail"]))]
                       + [(f"owner {o}", ", ".join(b)) for o, b in vmail["owners"].items()]))
    parts.append(table("certificates (public parts only)",
                       [(c["service"], c["path"], ", ".join(c["names"]) or c["subject"] or "-",
                         "MISSING" if c["missing"] else c["not_after"])
                        for c in email["certificates"]],
                       ("service", "file", "names", "expires")))
    if infra02 is not None and infra02["lxc"] is not None:
        nets = [adopted["container_net"]] + adopted["container_extra_nets"]
        parts.append(table(f"LXC config of {infra02['container']} on {infra02['host']}",
                           [(n.get("name", "eth0"), n["link"], n["hwaddr"] or "-",
                             n["ipv4"] or "-", n["ipv4_gateway"] or "-", n["ipv6"] or "-",
                             n["ipv6_gateway"] or "-") for n in nets],
                           ("nic", "link", "hwaddr", "ipv4", "gw4", "ipv6", "gw6")))
        parts.append(table("LXC mount entries (container_mounts)",
                           [(m["source"], m["target"], m["type"], m["options"])
                            for m in adopted["container_mounts"]],
                           ("source", "target", "type", "options")))
        parts.append(table("other LXC keys (kept: the deploy does not manage them)",
                           adopted["_lxc_unmanaged_keys"], ("key", "value")))
    parts.append(table("packages", [(n, ", ".join(v)) for n, v in adopted["_packages"].items()],
                       ("package", "version")))
    parts.append(table("findings", [(f,) for f in adopted["_findings"]]))
    return "\n\n".join(parts)


# --- connecting (shared with operations/drift.py) --------------------------------------------

def connect(inventory_path):
    """(state, {"infra02": host or None, "email": host}) for the inventory, connected.

    Raises AdoptError (status 2: bad inventory, 1: a host cannot be reached).
    """
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    if not Path(inventory_path).is_file():
        raise AdoptError(f"{inventory_path}: no such inventory file", 2)
    state = State()
    ctx_state.set(state)  # as pyinfra's CLI: the inventory file is read with a state
    try:
        inventory = make_inventory(inventory_path)
    except SystemExit as exc:  # inventories/validate.py printed its problems already
        raise AdoptError(f"{inventory_path}: the inventory is not valid (see above)",
                         2) from None
    except Exception as exc:  # noqa: BLE001 - any error of the inventory file: one line
        # pyinfra wraps errors of the file's own code (UnexpectedExternalError.exception).
        cause = getattr(exc, "exception", exc)
        raise AdoptError(f"{inventory_path}: cannot load the inventory: "
                         f"{type(cause).__name__}: {' '.join(str(cause).split())}", 2) from None
    email = inventory.get_group("email", [])
    infra02 = inventory.get_group("infra02", [])
    if len(email) != 1:
        raise AdoptError(f"{inventory_path}: group `email` must hold exactly one host "
                         f"(has {len(email)})", 2)
    if len(infra02) > 1:
        raise AdoptError(f"{inventory_path}: group `infra02` holds {len(infra02)} hosts; "
                         "adopt reads one", 2)
    hosts = email + infra02
    state.init(inventory, Config(), initial_limit=hosts)
    try:
        connect_all(state)
    except PyinfraError as exc:
        raise AdoptError(f"{inventory_path}: could not connect: {exc}", 1) from None
    for host in hosts:
        if host not in state.activated_hosts:
            raise AdoptError(f"{host.name}: could not connect", 1)
    return state, {"email": email[0], "infra02": infra02[0] if infra02 else None}


def host_data(host):
    """The host's inventory data as a dict of group_data/all.py's keys."""
    from operations.staging import data_context
    return data_context(host.data)


def read_all(hosts):
    """(email, infra02) as read from the connected hosts."""
    email_data = host_data(hosts["email"])
    email = read_email(hosts["email"], email_data)
    infra02 = None
    if hosts["infra02"] is not None:
        infra02 = read_infra02(hosts["infra02"], host_data(hosts["infra02"]))
    return email, infra02, email_data


def _parser():
    # The module docstring is the manual: its first line the description, the rest the epilog.
    summary, _, manual = __doc__.partition("\n")
    return argparse.ArgumentParser(prog="python -m operations.adopt", description=summary,
                                   epilog=manual.strip("\n"),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _quiet_pyinfra():
    """pyinfra logs each fact and step at INFO; the report is the output here."""
    import logging
    logging.getLogger("pyinfra").setLevel(logging.ERROR)


def main(argv=None):
    parser = _parser()
    parser.add_argument("inventory", help="inventory file, e.g. inventories/prod.py")
    parser.add_argument("--json", action="store_true",
                        help="one JSON document instead of tables")
    parser.add_argument("--write", metavar="FILE",
                        help="write the adopted inventory data (JSON) to FILE")
    parser.add_argument("--drift", action="store_true",
                        help="report what the first deploy would change, per service "
                             "(nothing is written on any host)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.drift and args.write:
        parser.error("--write and --drift do not go together")
    if args.write and Path(args.write).is_dir():
        print(f"--write {args.write}: is a directory", file=sys.stderr)
        return 2
    _quiet_pyinfra()
    from pyinfra.api.connect import disconnect_all
    try:
        state, hosts = connect(args.inventory)
    except AdoptError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        email, infra02, data = read_all(hosts)
        adopted = adopted_data(email, infra02, data, now)
        if args.drift:
            findings = drift.report(state, hosts, email, infra02, adopted, data)
            output = drift.render(findings, args.json, now)
        elif args.json:
            output = json.dumps({"adopted": adopted, "live": {"email": email,
                                                              "infra02": infra02}},
                                indent=2, sort_keys=True)
        else:
            output = render_text(email, infra02, adopted)
    except AdoptError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except ValueError as exc:  # a live file the parsers cannot read (live_facts.py)
        print(f"cannot read the live configuration: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 1
    finally:
        disconnect_all(state)
    if args.write:
        try:
            Path(args.write).parent.mkdir(parents=True, exist_ok=True)
            Path(args.write).write_text(json.dumps(adopted, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            print(f"--write {args.write}: {exc.strerror}", file=sys.stderr)
            return 2
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
