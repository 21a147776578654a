"""Validation of the inventory, on the control machine, before any host is touched.

pyinfra reads the inventory file before it connects anywhere, so inventories/prod.py and
inventories/lab.py hand all their hosts to `stop_unless_valid()`: every bad datum and every
missing or malformed secret of every host is found, and if there is any, the run stops there
with one line per problem (naming the host and the key or the file) and no traceback.

Rules that only a production inventory can meet (a gateway, trusted hosts, no placeholder,
the Icinga ticket, the self-service API's files) apply where the inventory says
`production=True`: the lab makes some of those files in its own first deploy phase.
`checked()` validates one host's data and raises InventoryError listing all its problems
(for tests and tools that want an exception).
"""
import contextlib
import ipaddress
import logging
import re
import sys

from operations.defaults import defaults
from operations.secrets import (InventoryError, read_backup_key, read_password, read_secret,
                                 secrets_dir)
from operations import (backup, backup_host, certificates, crl, dkim, firewall, icinga2_agent,
                        lxc_config, selfservice_api)

# pyinfra's own connection data may appear in a host's data beside ours.
_CONNECTION_KEYS = {"ssh_user", "ssh_key", "ssh_port", "ssh_known_hosts_file",
                    "ssh_strict_host_key_checking", "ssh_hostname", "_sudo", "_sudo_user",
                    "_use_sudo_login"}
# What the operations' own data checks raise besides InventoryError: each names the key.
_DATA_ERRORS = (InventoryError, ValueError, certificates.CertificateError,
                firewall.FirewallError)
# Marks a value the operators must replace before the first production run (group_data/all.py).
PLACEHOLDER = "PLACEHOLDER"
_SSH_PUBLIC_KEY = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) "
                             r"[A-Za-z0-9+/]+={0,3}( .*)?$")


class _Problems:
    """The problems found so far, one line each, in the order found, without repeats."""

    def __init__(self):
        self.lines = []

    def add(self, message):
        line = " ".join(str(message).split())  # one line, whatever the message held
        if line not in self.lines:
            self.lines.append(line)

    def run(self, check, *args):
        """`check(*args)`, recording the problem it raises."""
        with self.check():
            check(*args)

    @contextlib.contextmanager
    def check(self):
        """Record the problem the block raises and go on with the next check."""
        try:
            yield
        except _DATA_ERRORS as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                self.add(line)
        except (KeyError, TypeError, AttributeError) as exc:
            # A datum of the wrong shape met a check that expected another: name it.
            self.add(f"malformed inventory data ({type(exc).__name__}: {exc})")


def problems(group, data, production=False):
    """Every problem of one host's data merged over the defaults, one line each ([] if none).

    + group: the inventory group the host is in ("infra02", "email" or "backup_host")
    + data: the host's own data, as given in the inventory file
    + production: apply the production-only rules too
    """
    found = _Problems()
    known = defaults()  # runs group_data/all.py: once per host
    merged = {**known, **data}
    unknown = sorted(set(data) - set(known) - _CONNECTION_KEYS)
    if unknown:
        found.add(f"unknown inventory keys: {', '.join(unknown)}")
    release = merged.get("debian_release")
    if release not in ("bullseye", "bookworm", "trixie"):
        found.add(f"debian_release={release!r}: use bullseye, bookworm or trixie")
    if group == "infra02":
        found.run(_check_root_keys, merged)
    _check_container_nets(merged, found)
    _check_container_mounts(merged, found)
    if group == "email":
        _check_mail_data(merged, found)
        _check_certificates(merged, found)
        _check_mail_secrets(merged, found)
        found.run(_check_backup, merged)
        found.run(backup_host.source_settings, merged)
        found.run(dkim.settings, merged)
        found.run(crl.check_data, merged)
        found.run(firewall.rules, merged["ports"], merged["trusted_hosts"])
        found.run(read_password, merged["icinga2_api_password_secret"])
    if group == "backup_host":
        found.run(backup_host.host_settings, merged)
        found.run(backup_host.check_icinga_material, merged)
        if production:
            # The mail server's production rules (gateway, trusted hosts, its services'
            # placeholders) are not this host's: only its own data must be filled in.
            for where, value in _placeholders(data):
                found.add(_placeholder_line(where, value))
    elif production:
        _check_production(group, merged, found)
    return found.lines


def checked(group, data, production=False):
    """Return `data` (this host's overrides) after validating it merged over the defaults;
    raise InventoryError listing every problem, one per line."""
    found = problems(group, data, production)
    if found:
        raise InventoryError("\n".join(found))
    return data


def stop_unless_valid(production=False, **groups):
    """Validate every host of the inventory's `groups` ({group: [(name, data)]}); on any
    problem, print them all to stderr, one line each, and exit with status 2.

    Called at the end of an inventory file, so pyinfra stops while loading the inventory,
    before it connects anywhere. A problem several hosts share is printed once, naming them.
    """
    hosts_of = {}  # problem -> the hosts that have it, in order
    for group, hosts in groups.items():
        for name, data in hosts:
            for line in problems(group, data, production):
                hosts_of.setdefault(line, []).append(name)
    if hosts_of:
        count = len(hosts_of)
        print(f"The inventory has {count} problem{'s' if count > 1 else ''}; "
              "no host was contacted:", file=sys.stderr)
        for line, names in hosts_of.items():
            print(f"  {', '.join(names)}: {line}", file=sys.stderr)
        raise SystemExit(2)


# --- rules every inventory meets ------------------------------------------------------------

def _check_root_keys(data):
    """Infra02 writes these into the container's /root/.ssh/authorized_keys: empty, it would
    lock every later deploy (and every admin) out of the container."""
    keys = data["root_authorized_keys"]
    if not isinstance(keys, list) or not keys:
        raise InventoryError("root_authorized_keys: empty; the container's root would accept "
                             "no key and every later deploy would be locked out: list the "
                             "deploy's and the admins' public SSH keys")
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not _SSH_PUBLIC_KEY.match(key):
            raise InventoryError(f"root_authorized_keys[{i}]: {str(key)[:40]!r}... is not an "
                                 "OpenSSH public key line (type base64 [comment])")


# --- the container's NICs and mounts (its LXC config: operations/lxc_config.py) ------------

_NIC_FIELDS = ("link", "hwaddr", "ipv4", "ipv4_gateway", "ipv6", "ipv6_gateway")
# A Linux interface name (at most 15 characters), also safe in the config and interfaces files.
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
_HWADDR = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_MOUNT_FIELDS = ("source", "target", "type", "options")
_FSTYPE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_MOUNT_OPTION = re.compile(r"^[A-Za-z0-9_.:/@+-]+(=[A-Za-z0-9_.:/@+=-]*)?$")


def _placeholder_line(where, value):
    return (f"{where}: {value!r} is a placeholder; set the real value in the inventory before "
            "the first production run")


def _check_container_nets(data, found):
    """eth0 (container_net) and container_extra_nets: shape, names, MACs, addresses, gateways.
    A PLACEHOLDER value is named as such (as the production rule names it), not as malformed."""
    nets = []  # (where, name, net) of every NIC whose shape is usable
    with found.check():
        net = data["container_net"]
        fields = set(net) if isinstance(net, dict) else None
        if fields is None or not {"link", "ipv4"} <= fields or fields - set(_NIC_FIELDS):
            raise InventoryError(f"container_net: must be a dict with link and ipv4 (and "
                                 f"{', '.join(_NIC_FIELDS[1:])} or None), got {net!r}")
        nets.append(("container_net", "eth0", net))
    extra = data["container_extra_nets"]
    if not isinstance(extra, list):
        found.add("container_extra_nets: must be a list of NICs (dicts)")
        extra = []
    names = {"eth0": "container_net"}
    for i, net in enumerate(extra):
        where = f"container_extra_nets[{i}]"
        fields = set(net) if isinstance(net, dict) else None
        if fields is None or not {"name", "link"} <= fields or \
                fields - set(_NIC_FIELDS) - {"name"}:
            found.add(f"{where}: must be a dict with name and link (and "
                      f"{', '.join(_NIC_FIELDS[1:])} or None), got {net!r}")
            continue
        name = net["name"]
        if not isinstance(name, str) or not _IFNAME.match(name) or name in (".", "..", "lo"):
            found.add(f"{where} name: {name!r} is not an interface name (at most 15 of "
                      "A-Z a-z 0-9 _ . -)")
        elif name in names:
            found.add(f"{where} name: {name} is already {names[name]}'s (eth0 is "
                      "container_net; each NIC needs its own name)")
        else:
            names[name] = where
            nets.append((where, name, net))
    seen = {}       # a MAC or an address -> the NIC that has it
    gateways = {}   # "ipv4_gateway"/"ipv6_gateway" -> the NICs that set one
    for where, name, net in nets:
        for line in _nic_problems(where, name, net, seen, gateways):
            found.add(line)
    for field, wheres in gateways.items():
        if len(wheres) > 1:
            found.add(f"{field}: set on {' and '.join(wheres)}; the container has one default "
                      f"route per address family: keep it on one NIC")


def _nic_problems(where, name, net, seen, gateways):
    """The problems of one NIC's fields, one line each."""
    placeholders = [(f"{where}[{field!r}]", net[field]) for field in _NIC_FIELDS
                    if isinstance(net.get(field), str) and PLACEHOLDER in net[field]]
    lines = [_placeholder_line(w, value) for w, value in placeholders]
    skip = {w for w, _ in placeholders}

    def usable(field):
        return net.get(field) is not None and f"{where}[{field!r}]" not in skip

    link = net["link"]
    if usable("link") and (not isinstance(link, str) or not _IFNAME.match(link)):
        lines.append(f"{where} link: {link!r} is not a bridge name on the host")
    if usable("hwaddr"):
        mac = net["hwaddr"]
        if not isinstance(mac, str) or not _HWADDR.match(mac):
            lines.append(f"{where} hwaddr: {mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        elif int(mac[:2], 16) & 1:
            lines.append(f"{where} hwaddr: {mac} is a multicast address; a NIC needs a "
                         "unicast one (even first octet)")
        elif mac.lower() in seen:
            lines.append(f"{where} hwaddr: {mac} is also {seen[mac.lower()]}'s")
        else:
            seen[mac.lower()] = where
    if where != "container_net" and net.get("ipv4") is None and net.get("ipv6") is None:
        lines.append(f"{where}: neither ipv4 nor ipv6 is set; LXC configures a NIC's addresses "
                     "(the container leaves them alone), so it would have none")
    for family, version in (("ipv4", 4), ("ipv6", 6)):
        interface = None
        if usable(family) or (family == "ipv4" and where == "container_net" and
                              f"{where}['ipv4']" not in skip):
            interface, problem = _interface(net.get(family), version)
            if problem:
                lines.append(f"{where} {family}: {problem}")
            elif str(interface.ip) in seen:
                lines.append(f"{where} {family}: {interface.ip} is also "
                             f"{seen[str(interface.ip)]}'s")
            else:
                seen[str(interface.ip)] = where
        gateway_field = f"{family}_gateway"
        if not usable(gateway_field):
            continue
        gateways.setdefault(gateway_field, []).append(where)
        gateway = net[gateway_field]
        network = ("the container's network" if where == "container_net"
                   else f"{name}'s network")
        try:
            address = ipaddress.ip_address(gateway)
        except ValueError:
            lines.append(f"{where} {gateway_field}: {gateway!r} is not an IPv{version} address")
            continue
        if net.get(family) is None:
            lines.append(f"{where} {gateway_field}: {gateway} is set but {family} is not")
        elif interface is not None and (address.version != version or
                                        address not in interface.network):
            lines.append(f"{where} {gateway_field}: {gateway} is not an address of {network} "
                         f"{interface.network}")
        elif interface is not None and address == interface.ip:
            lines.append(f"{where} {gateway_field}: {gateway} is the NIC's own address")
    return lines


def _interface(value, version):
    """(ipaddress interface, None) for an address in CIDR form, or (None, the problem)."""
    if not isinstance(value, str) or "/" not in value:
        return None, f"{value!r} is not an address in CIDR form (address/prefix length)"
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        return None, f"{value!r} is not an address in CIDR form (address/prefix length)"
    if interface.version != version:
        return None, f"{value} is not an IPv{version} address"
    network = interface.network
    if version == 4 and network.prefixlen < 31 and \
            interface.ip in (network.network_address, network.broadcast_address):
        return None, f"{value} is the network's own or broadcast address, not a host's"
    return interface, None


def _check_container_mounts(data, found):
    """container_mounts: the four fields of a mount entry, a target inside the container that
    no other mount (the data volume's included) has."""
    mounts = data["container_mounts"]
    if not isinstance(mounts, list):
        found.add("container_mounts: must be a list of mounts (dicts)")
        return
    targets = {lxc_config.mount_target(data["data_volume"]): "data_volume"}
    for i, mount in enumerate(mounts):
        where = f"container_mounts[{i}]"
        if not isinstance(mount, dict) or set(mount) != set(_MOUNT_FIELDS):
            found.add(f"{where}: must be a dict with exactly {', '.join(_MOUNT_FIELDS)}, "
                      f"got {mount!r}")
            continue
        for line in _mount_problems(where, mount, targets):
            found.add(line)


def _mount_problems(where, mount, targets):
    lines, usable = [], {}
    for field in _MOUNT_FIELDS:
        value = mount[field]
        if isinstance(value, str) and PLACEHOLDER in value:
            lines.append(_placeholder_line(f"{where}[{field!r}]", value))
        elif not isinstance(value, str) or not value or \
                any(c.isspace() or not c.isprintable() for c in value):
            lines.append(f"{where} {field}: {value!r} must be a non-empty string without "
                         "spaces (it is one field of the mount entry)")
        else:
            usable[field] = value
    kind, options = usable.get("type"), usable.get("options")
    if kind is not None and not _FSTYPE.match(kind):
        lines.append(f"{where} type: {kind!r} is not a filesystem type (none for a bind mount)")
    if options is not None:
        bad = [o for o in options.split(",") if not _MOUNT_OPTION.match(o)]
        if bad:
            lines.append(f"{where} options: {', '.join(map(repr, bad))} in {options!r} is not "
                         "a mount option")
        elif kind == "none" and not {"bind", "rbind"} & set(options.split(",")):
            lines.append(f"{where} options: type none needs bind or rbind in {options!r}")
    source = usable.get("source")
    if source is not None and kind == "none" and \
            (not source.startswith("/") or ".." in source.split("/")):
        lines.append(f"{where} source: {source!r} must be an absolute path on the host "
                     "without '..' (a bind mount's source)")
    target = usable.get("target")
    if target is not None:
        parts = target.split("/")
        normal = lxc_config.mount_target(target)
        if ".." in parts or "." in parts or not normal:
            lines.append(f"{where} target: {target!r} must be a path inside the container "
                         "(below its root, without '.' or '..')")
        elif normal in targets:
            lines.append(f"{where} target: {normal} is already {targets[normal]}'s mount point")
        else:
            targets[normal] = where
    return lines


# --- the email container's data --------------------------------------------------------------

# A mailbox directory name: becomes <mail_root>/<user>, so no "/", no leading dot (no "..").
_USER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_LOCAL = r"[A-Za-z0-9!#$%&*+/=?^_{|}~.-]+"
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}"
_ADDRESS = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")
_DOMAIN_ONLY = re.compile(rf"^{_DOMAIN}$")
_POSTFIX_PARAMETER = re.compile(r"^[a-z][a-z0-9_]*$")
_CERTIFICATE_FIELDS = {"cert", "key", "names", "services"}
_CERTIFICATE_OPTIONAL = {"key_group"}
# The pairs the operations use (postfix: email + community; dovecot: community; the API: its own).
_CERTIFICATE_KEYS = {"email", "community", "selfservice_api"}


def _address(value, where):
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise InventoryError(f"{where}: {value!r} is not an email address")


def _line(value, where):
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise InventoryError(f"{where}: {value!r} must be a non-empty single-line string")


def _check_mail_data(data, found):
    with found.check():
        root = data["mail_root"]
        if not isinstance(root, str) or not root.startswith("/") or ".." in root.split("/"):
            raise InventoryError(f"mail_root={root!r}: must be an absolute path without '..'")
    with found.check():
        if not isinstance(data["postfix_inbound_hold"], bool):
            raise InventoryError("postfix_inbound_hold="
                                 f"{data['postfix_inbound_hold']!r}: must be True or False")
    with found.check():
        if not isinstance(data["dovecot_allow_weak_schemes"], bool):
            raise InventoryError("dovecot_allow_weak_schemes="
                                 f"{data['dovecot_allow_weak_schemes']!r}: must be True or False")
    seen = set()
    for i, account in enumerate(data["mail_accounts"]):
        found.run(_check_account, i, account, seen)
    for i, alias in enumerate(data["mail_aliases"]):
        found.run(_check_alias, i, alias, data["mail_domain"])
    for local, target in data["etc_aliases"].items():
        with found.check():
            if not _USER.match(local):
                raise InventoryError(f"etc_aliases: {local!r} is not a local part for "
                                     "/etc/aliases")
            _line(target, f"etc_aliases[{local!r}]")
    for i, rule in enumerate(data["arbitration_rewrites"]):
        found.run(_check_rewrite, i, rule)
    for recipient, copy_to in data["recipient_bcc"].items():
        with found.check():
            _address(recipient, "recipient_bcc key")
            _address(copy_to, f"recipient_bcc[{recipient!r}]")
    for domain, nexthop in data["transports"].items():
        with found.check():
            if not _DOMAIN_ONLY.match(domain):
                raise InventoryError(f"transports: {domain!r} is not a domain")
            _line(nexthop, f"transports[{domain!r}]")
            if " " in nexthop:
                raise InventoryError(f"transports[{domain!r}]: {nexthop!r} contains a space")
    for name, value in data["postfix_main_cf_extra"].items():
        with found.check():
            if not _POSTFIX_PARAMETER.match(name):
                raise InventoryError(f"postfix_main_cf_extra: {name!r} is not a Postfix "
                                     "parameter name")
            _line(str(value), f"postfix_main_cf_extra[{name!r}]")


def _check_account(i, account, seen):
    where = f"mail_accounts[{i}]"
    if not isinstance(account, dict) or set(account) != {"user", "email"}:
        raise InventoryError(f"{where}: must be {{'user': ..., 'email': ...}}, got {account!r}")
    user = account["user"]
    if not isinstance(user, str) or not _USER.match(user):
        raise InventoryError(
            f"{where}: user {user!r} is not a valid mailbox name (a-z, 0-9, '.', '_', '-', "
            f"not starting with '.' or '-'): it becomes the directory <mail_root>/<user>")
    _address(account["email"], f"{where} email")
    for name in (user, account["email"].lower()):
        if name in seen:
            raise InventoryError(f"{where}: {name!r} appears twice in mail_accounts")
        seen.add(name)


def _check_alias(i, alias, mail_domain):
    where = f"mail_aliases[{i}]"
    if not isinstance(alias, dict) or set(alias) != {"alias", "owner", "send_as"}:
        raise InventoryError(
            f"{where}: must be {{'alias': ..., 'owner': ..., 'send_as': bool}}, got {alias!r}")
    _address(alias["alias"], f"{where} alias")
    _address(alias["owner"], f"{where} owner")
    if not isinstance(alias["send_as"], bool):
        raise InventoryError(f"{where}: send_as must be True or False")
    domain = alias["alias"].rsplit("@", 1)[1].lower()
    if not alias["send_as"] and domain != mail_domain:
        # Those go to /etc/aliases, which knows local parts of the mail domain only.
        raise InventoryError(f"{where}: {alias['alias']} has send_as False, so it goes to "
                             f"/etc/aliases, which serves @{mail_domain} only")


def _check_rewrite(i, rule):
    where = f"arbitration_rewrites[{i}]"
    if not isinstance(rule, dict) or set(rule) != {"match", "to"}:
        raise InventoryError(f"{where}: must be {{'match': regexp, 'to': address}}")
    _line(rule["match"], f"{where} match")
    try:
        re.compile(rule["match"])
    except re.error as exc:
        raise InventoryError(f"{where}: match {rule['match']!r} is no regexp: {exc}") from None
    if "/" in rule["match"]:
        raise InventoryError(f"{where}: match must not contain '/' (Postfix's delimiter)")
    _address(rule["to"], f"{where} to")


def _check_certificates(data, found):
    """Each pair of `certificates`: well-formed entry, then the cryptographic checks."""
    pairs = data["certificates"]
    unknown = sorted(set(pairs) - _CERTIFICATE_KEYS)
    if unknown:
        found.add(f"certificates: unknown key(s) {', '.join(unknown)} "
                  f"(known: {', '.join(sorted(_CERTIFICATE_KEYS))})")
    missing = sorted(_CERTIFICATE_KEYS - set(pairs))
    if missing:
        found.add(f"certificates: missing {', '.join(missing)}")
    ca_pem = _read(found, "ca.pem")
    for key, cert in sorted(pairs.items()):
        found.run(_check_entry, key, cert)
        # Each missing or unreadable file of the pair is a problem of its own.
        chain_pem, key_pem = _read(found, f"{key}.chain.pem"), _read(found, f"{key}.key.pem")
        if ca_pem and chain_pem and key_pem:
            with found.check():
                warnings = certificates.check_pair(
                    chain_pem, key_pem, ca_pem, cert["names"], data["certificate_warn_days"],
                    what=f"certificates[{key!r}] ({secrets_dir() / key}.chain.pem)")
                for warning in warnings:
                    logging.getLogger("pyinfra").warning("WARNING: %s", warning)


def _read(found, name):
    """The secret `name`, or None after recording why it is unusable."""
    with found.check():
        return read_secret(name)
    return None


def _check_entry(key, cert):
    where = f"certificates[{key!r}]"
    fields = set(cert)
    if not _CERTIFICATE_FIELDS <= fields or fields - _CERTIFICATE_FIELDS - _CERTIFICATE_OPTIONAL:
        raise InventoryError(
            f"{where}: needs exactly {', '.join(sorted(_CERTIFICATE_FIELDS))} "
            f"(optional: key_group), got {', '.join(sorted(fields))}")
    for path in (cert["cert"], cert["key"]):
        if not path.startswith("/"):
            raise InventoryError(f"{where}: {path!r} must be an absolute path")
    if not cert["names"]:
        raise InventoryError(f"{where}: names must list the hostnames it serves")


def _check_mail_secrets(data, found):
    """The database passwords and one password per seeded account exist and are usable."""
    names = ["mysql_postfix.password", "mysql_dovecot.password"]
    names += [f"accounts/{account['email']}.password" for account in data["mail_accounts"]
              if isinstance(account, dict) and "email" in account]
    for name in names:
        found.run(read_password, name)


def _check_backup(data):
    """The nightly backup's data (operations/backup.py) and, when encrypted, its key."""
    backup.settings(data)
    if data["backup_encrypt"]:
        read_backup_key(data["backup_key_secret"])


# --- production only ------------------------------------------------------------------------

def _check_production(group, data, found):
    """What the lab cannot meet when its inventory is read (it makes some of these files in
    its own first phase) but production must before anything is touched."""
    found.run(_check_gateway, data["container_net"])
    for name, entry in sorted(data["ports"].items()):
        origin = entry.get("from") if isinstance(entry, dict) else None
        if origin not in (None, "any", "local") and not data["trusted_hosts"].get(origin):
            found.add(f"trusted_hosts[{origin!r}]: empty, so nothing may reach "
                      f"ports[{name!r}] (port {entry.get('port')}): list the {origin} "
                      "host's addresses")
    # successor_net is read by an upgrade only (operations/successor.py checks it there).
    upgrade_only = ("successor_net",)
    for where, value in _placeholders({k: v for k, v in data.items() if k not in upgrade_only}):
        found.add(_placeholder_line(where, value))
    if group == "email":
        # The placeholders are named above; these find what else is wrong with those data.
        if not any(where.startswith(("selfservice_api_", "crl_")) for where, _ in
                   _placeholders(data)):
            found.run(selfservice_api.settings, data)
            found.run(crl.settings, data)
        found.run(icinga2_agent.read_ticket, data["icinga2_ticket_secret"],
                  data["icinga2_node_name"])


def _check_gateway(net):
    """Production's container needs a route out; the address itself is checked for every
    inventory (_check_container_nets)."""
    if not net.get("ipv4_gateway"):
        raise InventoryError("container_net ipv4_gateway: missing; the container would have "
                             "no route beyond its own network")


def _placeholders(data, where=""):
    """(key, value) of every string in `data` (nested) that still holds PLACEHOLDER."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return [(where, data)] if isinstance(data, str) and PLACEHOLDER in data else []
    found = []
    for key, value in items:
        inner = (f"{where}[{key!r}]" if where else str(key))
        found += _placeholders(value, inner)
    return found
