"""What the first deploy of an inventory would change on the live hosts, per service.

    python -m operations.adopt inventories/prod.py --drift
    python -m operations.adopt inventories/prod.py --drift --json

pyinfra prepares deploy.py for the inventory's infra02 and email hosts exactly as
`pyinfra --dry` does (operations are prepared against the facts read from the hosts; none
is ever run: this module has no call that executes one), and each operation that would
change something becomes one line under its service (the operations/ module it comes from):
the files it would replace, the packages it would install or purge, the commands it would
run. Steps that run only when an earlier one changed (reloads, restarts) are marked so.

Added where --diff cannot show it:
- secret files (operations/secret_file.py): name and sha256 of the live and the new
  content, never the content;
- cacertusers: tables, views and columns the deploy's schema adds, and those that exist live
  that it does not know (they are kept; a missing column is NOT added by CREATE TABLE IF NOT
  EXISTS), and the grants operations/mariadb.py would set or revoke;
- the vmail uid the deploy would use against the live owner of the Maildirs;
- the settings of `postconf -n` and `doveconf -n` that the deploy's templates would change:
  only the ones that decide where mail goes and who may read it (POSTFIX_SETTINGS,
  DOVECOT_SETTINGS), compared with files/postfix/main.cf.j2 and files/dovecot/<v>/ rendered
  for the inventory; everything else of those files shows as "replaces" lines;
- the LXC config keys, NICs and mount entries the deploy's config of the container drops.

The comparisons are pure functions, tested with captured outputs.
"""
import datetime
import hashlib
import json
import os
import posixpath
import re
import sys

from operations import live_facts as lf
from operations.text_table import table

# main.cf parameters compared with the rendered template: routing, maps, identity, TLS files.
POSTFIX_SETTINGS = ("myhostname", "mydomain", "mydestination", "relayhost", "mynetworks",
                    "recipient_delimiter", "alias_maps", "virtual_alias_maps",
                    "recipient_bcc_maps", "transport_maps", "mailbox_transport",
                    "virtual_transport", "virtual_mailbox_domains", "virtual_mailbox_maps",
                    "local_recipient_maps", "smtpd_sender_login_maps", "smtpd_tls_cert_file",
                    "smtpd_tls_key_file", "smtpd_sasl_type", "smtpd_sasl_path",
                    "message_size_limit", "mailbox_size_limit", "smtpd_milters")
# dovecot.conf settings compared: where mail is, who owns it, how users log in.
DOVECOT_SETTINGS = ("protocols", "mail_location", "mail_uid", "mail_gid", "first_valid_uid",
                    "last_valid_uid", "passdb/driver", "passdb/args", "userdb/driver",
                    "userdb/args", "ssl", "ssl_cert", "ssl_min_protocol", "auth_mechanisms",
                    "disable_plaintext_auth", "postmaster_address", "recipient_delimiter",
                    "protocol lmtp/mail_plugins")


def finding(service, host, kind, what):
    return {"service": service, "host": host, "kind": kind, "what": what}


# --- pure comparisons ------------------------------------------------------------------------

def _words(value):
    """A setting's value as comparable words (commas and spaces alike; $mail_plugins, which
    doveconf -n expands, left out)."""
    return [w for w in re.split(r"[\s,]+", value or "") if w and w != "$mail_plugins"]


def settings_drift(service, host, tool, live, rendered, keys, live_set=None):
    """One finding per setting of `keys` whose live value differs from the rendered one.

    + live: the values in use (defaults included where the tool can tell them)
    + rendered: what the deploy's file sets
    + live_set: the settings the live file sets itself (`-n`); a setting the rendered file
      leaves out is then compared as "back to the default" only when the live file set it
    """
    found = []
    for key in keys:
        old, new = live.get(key), rendered.get(key)
        if new is None and live_set is not None and key not in live_set:
            continue  # neither file sets it: the default stays
        if _words(old) == _words(new):
            continue
        if new is None:
            what = f"{tool} {key}: {old!r} -> (not set: the default)"
        elif old is None:
            what = f"{tool} {key}: (not set) -> {new!r}"
        else:
            what = f"{tool} {key}: {old!r} -> {new!r}"
        found.append(finding(service, host, "setting", what))
    return found


def parse_schema_sql(sql):
    """{name: {"kind": "table"|"view", "columns": [...]}} from files/mariadb/schema.sql.j2's
    rendered text (CREATE TABLE column lines; views by name, their columns from the first
    SELECT list)."""
    objects = {}
    for match in re.finditer(r"CREATE TABLE IF NOT EXISTS `?(\w+)`? \((.*?)\n\)", sql, re.S):
        columns = []
        for line in match.group(2).splitlines():
            word = line.strip().split(" ", 1)[0].strip("`")
            if word and word.upper() not in ("PRIMARY", "UNIQUE", "KEY", "INDEX",
                                             "CONSTRAINT", "FOREIGN"):
                columns.append(word)
        objects[match.group(1)] = {"kind": "table", "columns": columns}
    for match in re.finditer(r"VIEW `?(\w+)`? AS\s+SELECT (.*?) FROM", sql, re.S):
        columns = [c.split()[-1] for c in match.group(2).split(",")]
        objects[match.group(1)] = {"kind": "view", "columns": columns}
    return objects


def schema_drift(host, deploy, live, database):
    """Findings for the tables/views/columns the deploy's schema adds or does not know."""
    found = []
    for name, obj in sorted(deploy.items()):
        have = live.get(name)
        if have is None:
            found.append(finding("mariadb", host, "schema",
                                 f"{database}.{name}: {obj['kind']} added "
                                 f"({', '.join(obj['columns'])})"))
        elif obj["kind"] == "view":
            if have["columns"] != obj["columns"]:
                found.append(finding("mariadb", host, "schema",
                                     f"{database}.{name}: view replaced: columns "
                                     f"{', '.join(have['columns'])} -> "
                                     f"{', '.join(obj['columns'])}"))
        else:
            missing = [c for c in obj["columns"] if c not in have["columns"]]
            extra = [c for c in have["columns"] if c not in obj["columns"]]
            if missing:
                found.append(finding("mariadb", host, "schema",
                                     f"{database}.{name}: lacks column(s) "
                                     f"{', '.join(missing)}; CREATE TABLE IF NOT EXISTS does "
                                     "not add them: the views on it would fail (ALTER first)"))
            if extra:
                found.append(finding("mariadb", host, "schema",
                                     f"{database}.{name}: live column(s) {', '.join(extra)} "
                                     "unknown to the deploy (kept)"))
    for name, obj in sorted(live.items()):
        if name not in deploy:
            found.append(finding("mariadb", host, "schema",
                                 f"{database}.{name}: live {obj['kind']} unknown to the "
                                 "deploy (kept; nothing of the deploy reads it)"))
    return found


def grants_drift(host, account_views, live, database, host_part="localhost"):
    """Findings for the grants operations/mariadb.py sets (REVOKE ALL, then SELECT on its
    views) against the live ones; accounts it does not manage are named as kept."""
    found = []
    managed = {f"{a}@{host_part}": a for a in account_views}
    for grantee, account in sorted(managed.items()):
        wanted = {f"SELECT on {v}" for v in account_views[account]}
        have = set(live.get(grantee, []))
        if grantee not in live:
            found.append(finding("mariadb", host, "grant",
                                 f"{grantee}: account's grants made: "
                                 f"{', '.join(sorted(wanted))}"))
            continue
        if wanted - have:
            found.append(finding("mariadb", host, "grant",
                                 f"{grantee}: granted {', '.join(sorted(wanted - have))}"))
        if have - wanted:
            found.append(finding("mariadb", host, "grant",
                                 f"{grantee}: revoked {', '.join(sorted(have - wanted))}"))
    for grantee in sorted(set(live) - set(managed)):
        found.append(finding("mariadb", host, "grant",
                             f"{grantee}: not managed by operations/mariadb.py (kept): "
                             f"{', '.join(live[grantee])}"))
    return found


def vmail_drift(host, vmail_user, vmail_uid, live):
    """Findings when the deploy's vmail uid differs from the live user or Maildir owners."""
    found = []
    user = live["vmail"]
    if user is None:
        found.append(finding("dovecot", host, "vmail",
                             f"user {vmail_user} made with uid/gid {vmail_uid}"))
    elif user["uid"] != vmail_uid or user["gid"] != vmail_uid:
        found.append(finding("dovecot", host, "vmail",
                             f"{vmail_user} is {user['uid']}:{user['gid']} live, the deploy "
                             f"says {vmail_uid}: set vmail_uid = {user['uid']} (adopt "
                             "--write) or Dovecot's first_valid_uid refuses every mailbox"))
    for owner, boxes in live["owners"].items():
        if owner != f"{vmail_uid}:{vmail_uid}":
            found.append(finding("dovecot", host, "vmail",
                                 f"{len(boxes)} Maildir(s) owned by {owner}, the deploy's "
                                 f"vmail is {vmail_uid}:{vmail_uid}"))
    return found


def lxc_drift(host, live, new):
    """Findings for what the deploy's container config (`new`, parsed) would drop or change
    of the live one (`live`, parsed): other keys, NICs, mount entries."""
    found = []
    new_other = {tuple(kv) for kv in new["other"]}
    for key, value in live["other"]:
        if (key, value) not in new_other:
            found.append(finding("infra02", host, "lxc", f"key dropped: {key} = {value}"))
    new_nets = {n["name"]: n for n in new["nets"]}
    for net in live["nets"]:
        name = net["name"] or f"eth{net['index']}"
        other = new_nets.get(name)
        if other is None:
            found.append(finding("infra02", host, "lxc",
                                 f"NIC dropped: {name} on {net['link']} "
                                 f"{', '.join(net['ipv4'] + net['ipv6'])}"))
            continue
        for field in ("link", "hwaddr", "ipv4", "ipv4_gateway", "ipv6", "ipv6_gateway"):
            if net[field] != other[field]:
                found.append(finding("infra02", host, "lxc",
                                     f"NIC {name} {field}: {net[field]} -> {other[field]}"))
    new_mounts = {m["line"] for m in new["mounts"]}
    for mount in live["mounts"]:
        if mount["line"] not in new_mounts:
            found.append(finding("infra02", host, "lxc",
                                 f"mount entry dropped: {mount['line']}"))
    for mount in new["mounts"]:
        if mount["line"] not in {m["line"] for m in live["mounts"]}:
            found.append(finding("infra02", host, "lxc", f"mount entry added: {mount['line']}"))
    return found


_APT = re.compile(r"apt-get .*?\b(install|remove|purge)\b(.*)$")


def command_effects(texts, uploads):
    """What an operation's commands do, as short phrases: the files it replaces, the packages
    it installs or removes, else the commands themselves (shortened).

    + texts: its shell commands (masked text)
    + uploads: the remote paths it uploads to
    """
    effects = []
    for dest in uploads:
        effects.append(f"writes {dest}")
    for text in texts:
        replaced = re.findall(r"mv -f \S+\.new (\S+)", text)
        apt = _APT.search(text)
        if replaced:
            effects += [f"replaces {p}" for p in replaced]
        elif apt:
            packages = [w for w in apt.group(2).split() if not w.startswith("-")
                        and "=" not in w and not w.startswith("'-")]
            verb = "installs" if apt.group(1) == "install" else "purges"
            effects.append(f"{verb} {' '.join(p.strip(chr(39)) for p in packages)}")
        elif ".upload" in text or (text.startswith(("rm -rf", "install -d", "chmod 600"))
                                     and "/staging/" in text):
            continue  # staging a file set or a secret: its effect is named separately
        else:
            short = " ".join(text.split())
            effects.append("runs " + (short if len(short) <= 90 else short[:87] + "..."))
    seen, result = set(), []
    for effect in effects:
        if effect not in seen:
            seen.add(effect)
            result.append(effect)
    return result


# --- preparing the deploy (dry) --------------------------------------------------------------

def _services():
    """{deploy name: operations module} for every @deploy function of operations/."""
    names = {}
    for modname, module in list(sys.modules.items()):
        if not modname.startswith("operations.") or module is None:
            continue
        for value in vars(module).values():
            inner = getattr(value, "_inner", None)
            if inner is not None and hasattr(inner, "deploy_name") and \
                    getattr(value, "__module__", "") == modname:
                names[inner.deploy_name] = modname.split(".", 1)[1]
    return names


def _secret_effect(host, dest, src):
    """A secret upload as "secret PATH: sha256 OLD -> NEW" (the content itself never shown)."""
    from pyinfra.facts.files import File, Sha256File
    real = posixpath.join(posixpath.dirname(posixpath.dirname(dest)), posixpath.basename(dest))
    data = src.getvalue() if hasattr(src, "getvalue") else b""
    data = data.encode() if isinstance(data, str) else data
    live = host.get_fact(Sha256File, path=real) if host.get_fact(File, path=real) else None
    return real, (f"secret {real} (content not shown): sha256 {live or '(none)'} -> "
                  f"{hashlib.sha256(data).hexdigest()}")


def _is_secret_upload(dest):
    """Whether `dest` is where operations/secret_file.py stages a secret (see staged_path)."""
    from operations.secret_file import staged_path
    real = posixpath.join(posixpath.dirname(posixpath.dirname(dest)), posixpath.basename(dest))
    return staged_path(real) == dest


def _uploaded_text(src):
    data = src.getvalue() if hasattr(src, "getvalue") else ""
    return data.decode() if isinstance(data, bytes) else data


def _load_deploy(state, hosts):
    """Prepare deploy.py for each of `hosts` in turn, as pyinfra's CLI does (`load_deploy_file`,
    one host at a time here): {host name: the error that stopped its preparation}."""
    import pyinfra
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_config, ctx_host, ctx_state
    from pyinfra_cli.util import exec_file

    from operations.staging import REPO

    deploy_file = str(REPO / "deploy.py")
    state.set_stage(StateStage.Prepare)
    state.current_op_file_number = 0
    state.current_deploy_filename = deploy_file
    here, was_cli = os.getcwd(), pyinfra.is_cli
    os.chdir(REPO)  # deploy.py's templates are named relative to the repository
    # As pyinfra's CLI: operations are ordered (and hashed) by their place in the code, so
    # the same operation has the same hash on every host and different ones never share one.
    pyinfra.is_cli = True
    errors = {}
    try:
        ctx_state.set(state)
        for host in hosts:
            try:
                with ctx_config.use(state.config.copy()), ctx_host.use(host):
                    exec_file(deploy_file)
            except Exception as exc:  # noqa: BLE001 - what stops the deploy is the finding
                cause = getattr(exc, "exception", exc)  # pyinfra wraps errors of deploy code
                errors[host.name] = f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    finally:
        os.chdir(here)
        pyinfra.is_cli = was_cli
    return errors


def _commands(host, op_data, uploads_seen):
    """(shell texts, uploaded paths, secret lines) of one prepared operation: its command
    generator is walked (as pyinfra does to tell a change), nothing is run. Uploaded file
    contents are kept in `uploads_seen` by (host name, path)."""
    from pyinfra.api.command import FileUploadCommand, StringCommand
    from pyinfra.context import ctx_host

    from operations.staging import STAGING_ROOT

    texts, uploads, secrets = [], [], []
    with ctx_host.use(host):
        for command in op_data.command_generator():
            if isinstance(command, FileUploadCommand):
                dest = command.dest
                if _is_secret_upload(dest):
                    secrets.append(_secret_effect(host, dest, command.src)[1])
                elif dest.startswith(STAGING_ROOT + "/"):
                    uploads_seen[(host.name, dest)] = _uploaded_text(command.src)
                else:
                    uploads.append(dest)
                    uploads_seen[(host.name, dest)] = _uploaded_text(command.src)
            elif isinstance(command, StringCommand):
                texts.append(command.get_masked_value())
            elif isinstance(command, str):
                texts.append(command)
    return texts, uploads, secrets


def prepare(state, hosts):
    """Prepare deploy.py for `hosts` as `pyinfra --dry` does: operations are made (facts are
    read) and never run. Returns (operation findings, {(host, dest): uploaded text})."""
    errors = _load_deploy(state, hosts)
    services = _services()
    found = [finding("deploy", name, "blocked", f"the deploy would stop on this host: {error} "
                     "(its steps before that are listed under their services)")
             for name, error in errors.items()]
    uploads_seen = {}
    for host in hosts:
        for op_hash in state.get_op_order():
            op_data = state.ops.get(host, {}).get(op_hash)
            if op_data is None:
                continue
            meta = state.op_meta[op_hash]
            name = sorted(meta.names)[0] if meta.names else op_hash
            deploy_name, _, op_name = name.partition(" | ")
            service = services.get(deploy_name, "deploy") if op_name else "deploy"
            op_name = op_name or name
            if not op_data.operation_meta._maybe_is_change:
                continue
            try:
                texts, uploads, secrets = _commands(host, op_data, uploads_seen)
            except Exception as exc:  # noqa: BLE001 - one step that cannot tell is one line
                found.append(finding(service, host.name, "unknown",
                                     f"{op_name}: cannot tell what it would do: "
                                     f"{' '.join(str(exc).split())}"))
                continue
            conditional = bool(op_data.global_arguments.get("_if"))
            effects = secrets + command_effects(texts, uploads)
            kind = "if-changed" if conditional else "change"
            what = f"{op_name}: {'; '.join(effects) if effects else 'changes'}"
            if conditional:
                what = f"{op_name} (only if an earlier step of it changed)"
            found.append(finding(service, host.name, "secret" if secrets else kind, what))
    # A step that runs only if an earlier one changed is worth a line only where its
    # service changes something on that host.
    changing = {(f["service"], f["host"]) for f in found if f["kind"] != "if-changed"}
    found = [f for f in found
             if f["kind"] != "if-changed" or (f["service"], f["host"]) in changing]
    return found, uploads_seen


def report(state, hosts, email, infra02, adopted, data):
    """Every drift finding for the connected `hosts` (see the module docstring).

    + email, infra02, adopted: what operations/adopt.py read and made of it
    + data: the email host's inventory data (group_data/all.py's keys)
    """
    from operations import dovecot as dovecot_ops, mariadb as mariadb_ops
    from operations.staging import render

    email_host = hosts["email"]
    targets = [h for h in (hosts["infra02"], email_host) if h is not None]
    found, uploads = prepare(state, targets)
    name = email_host.name
    if email["tables"] is not None:
        schema = parse_schema_sql(render("files/mariadb/schema.sql.j2", **data))
        found += schema_drift(name, schema, email["tables"], data["mysql_database"])
    if email["grants"] is not None:
        found += grants_drift(name, mariadb_ops.ACCOUNT_VIEWS, email["grants"],
                              data["mysql_database"])
    found += vmail_drift(name, data["vmail_user"], data["vmail_uid"], email["vmail"])
    if email["postconf"]:
        rendered = lf.parse_postconf(render("files/postfix/main.cf.j2", **data))
        found += settings_drift("postfix", name, "postconf", email["postconf_effective"],
                                rendered, POSTFIX_SETTINGS, email["postconf"])
    if email["doveconf"] and data["debian_release"] in dovecot_ops.DOVECOT_VERSION:
        folder = dovecot_ops.template_dir(data["debian_release"])
        # dovecot.conf includes its auth part (passdb, userdb, post-login): read both.
        rendered = lf.parse_doveconf(
            render(f"{folder}/dovecot.conf.j2", **data) + "\n" +
            render(f"{folder}/dovecot-auth.conf.ext.j2", **data,
                   rehash_user=dovecot_ops.REHASH_ACCOUNT,
                   rehash_program=dovecot_ops.REHASH_PROGRAM))
        found += settings_drift("dovecot", name, "doveconf", email["doveconf_effective"],
                                rendered, DOVECOT_SETTINGS, email["doveconf"])
        sql = lf.parse_postconf(render(f"{folder}/dovecot-sql.conf.ext.j2", **data,
                                       password="(not shown)"))
        found += settings_drift("dovecot", name, "dovecot-sql.conf.ext",
                                {"default_pass_scheme": email["default_pass_scheme"]}, sql,
                                ("default_pass_scheme",))
    if infra02 is not None and infra02["lxc"] is not None:
        path = f"/var/lib/lxc/{infra02['container']}/config"
        new = uploads.get((infra02["host"], path))
        if new is not None:
            found += lxc_drift(infra02["host"], infra02["lxc"], lf.parse_lxc_config(new))
    for scheme, logins in (adopted.get("_weak_password_accounts") or {}).items():
        found.append(finding("dovecot", name, "accounts",
                             f"{scheme} refused by Dovecot 2.4 (trixie) unless "
                             f"auth_allow_weak_schemes: {', '.join(logins)}"))
    order = {"blocked": 0, "secret": 2, "change": 1, "if-changed": 9}
    found.sort(key=lambda f: (f["service"], order.get(f["kind"], 5)))
    return found


def render(findings, as_json, now):
    """The drift report: a table per service, or JSON {"generated", "findings", "services"}."""
    services = {}
    for f in findings:
        services[f["service"]] = services.get(f["service"], 0) + 1
    if as_json:
        return json.dumps({"generated": now.isoformat(timespec="seconds"),
                           "findings": findings, "services": services}, indent=2)
    parts = [f"Drift: what the first deploy would change ({now:%Y-%m-%d %H:%M} UTC); "
             "nothing was written on any host."]
    for service in sorted(services):
        rows = [(f["host"], f["kind"], f["what"]) for f in findings if f["service"] == service]
        parts.append(table(service, rows, ("host", "kind", "what")))
    if not findings:
        parts.append("No drift: the deploy would change nothing.")
    return "\n\n".join(parts)
