"""Inventory validation: every bad input stops the run with an error naming it."""
import pytest
from conftest import write_secret

from operations.defaults import defaults
from operations.secrets import InventoryError
from inventories.validate import checked, problems, stop_unless_valid
from lab import topology
from tests.harness import DAY, NOW, PKI


def test_valid_lab_data_passes(secrets, email_data):
    assert checked("email", email_data) == email_data


ROOT_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE "
            "deploy@control")


def test_infra02_needs_no_secrets(monkeypatch):
    monkeypatch.delenv("CACERT_EMAIL_SECRETS", raising=False)
    data = {"debian_release": "trixie", "root_authorized_keys": [ROOT_KEY]}
    assert checked("infra02", data) == data


@pytest.mark.parametrize("keys, message", [
    ([], r"root_authorized_keys: empty; .* locked out"),
    (["AAAAC3Nza... no type"], r"root_authorized_keys\[0\]: .* is not an OpenSSH public key"),
])
def test_infra02_refuses_root_keys_that_lock_the_deploy_out(keys, message):
    """infra02.container() writes them into the container's /root/.ssh/authorized_keys."""
    with pytest.raises(InventoryError, match=message):
        checked("infra02", {"root_authorized_keys": keys})


def test_every_problem_is_reported_at_once(secrets, email_data):
    (secrets / "ca.pem").unlink()
    (secrets / "mysql_postfix.password").unlink()
    email_data["mail_accounts"][1]["user"] = "Bob"
    email_data["transports"] = {"lists.cacert.test": "smtp:[a] b"}
    email_data["dkim_selector"] = "a b"
    email_data["backup_schedule"] = "daily"
    with pytest.raises(InventoryError) as error:
        checked("email", email_data)
    lines = str(error.value).splitlines()
    for part in ("ca.pem is missing", "mysql_postfix.password is missing",
                 "mail_accounts[1]: user 'Bob'", "transports['lists.cacert.test']",
                 "dkim_selector", "backup_schedule"):
        assert sum(part in line for line in lines) == 1, (part, lines)
    assert len(lines) == 6
    assert problems("email", email_data) == lines


def test_production_rules_apply_only_to_production(secrets, email_data):
    """The lab's data (placeholders overridden there, but no gateway, no trusted hosts, the
    ticket made later by the lab's own first phase) passes unless production is asked for."""
    email_data["selfservice_api_repo"] = {**defaults()["selfservice_api_repo"],
                                          "url": "http://10.0.3.1:8080/"}
    assert problems("email", email_data) == []
    found = problems("email", email_data, production=True)
    assert [line.split(":")[0] for line in found] == [
        "container_net ipv4_gateway",
        "trusted_hosts['monitor']",
        "trusted_hosts['community']",
        "selfservice_api_repo['key']",
        "selfservice_api_client_ca",
        f"secret {secrets.resolve()}/icinga2-agent.ticket is missing",
    ], found


def test_production_gateway_and_ticket_are_checked(secrets, email_data, pki, tmp_path):
    ca = tmp_path / "client-ca.pem"
    ca.write_text(pki.pem_root())
    email_data.update(
        container_net={**defaults()["container_net"], "ipv4_gateway": "10.9.9.9"},
        trusted_hosts={"monitor": ["192.0.2.10"], "community": ["192.0.2.20"]},
        selfservice_api_repo={**defaults()["selfservice_api_repo"],
                              "url": "https://apt.example.org/debian", "key": str(ca)},
        selfservice_api_client_ca=str(ca))
    write_secret(secrets, "icinga2-agent.ticket", "not a ticket\n")
    assert problems("email", email_data, production=True) == [
        "container_net ipv4_gateway: 10.9.9.9 is not an address of the container's network "
        "213.154.225.0/24",
        "secret icinga2-agent.ticket: not an Icinga2 ticket (40 hex digits, from "
        "`icinga2 pki ticket --cn email.infra.cacert.org`)",
    ]
    email_data["container_net"]["ipv4_gateway"] = "213.154.225.1"
    write_secret(secrets, "icinga2-agent.ticket", "0123456789abcdef" * 2 + "01234567\n")
    assert problems("email", email_data, production=True) == []


def test_icinga_api_password_is_checked_before_any_host(secrets, email_data):
    (secrets / "icinga2_api.password").unlink()
    with pytest.raises(InventoryError, match=r"icinga2_api.password is missing"):
        checked("email", email_data)


def test_bad_trusted_host_address(secrets, email_data):
    email_data["trusted_hosts"] = {"monitor": ["not-an-address"], "community": []}
    with pytest.raises(InventoryError, match=r"trusted_hosts\['monitor'\]: 'not-an-address'"):
        checked("email", email_data)


def test_stop_unless_valid_prints_one_line_per_problem_and_exits(monkeypatch, capsys):
    monkeypatch.delenv("CACERT_EMAIL_SECRETS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        stop_unless_valid(infra02=[("infra02", {})], email=[("email.test", {})])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "The inventory has 2 problems; no host was contacted:",
        "  infra02: root_authorized_keys: empty; the container's root would accept no key "
        "and every later deploy would be locked out: list the deploy's and the admins' "
        "public SSH keys",
        "  email.test: $CACERT_EMAIL_SECRETS is not set: it must name the secrets directory",
    ]
    stop_unless_valid(infra02=[("infra02", {"root_authorized_keys": [ROOT_KEY]})])


def test_secrets_directory_unset(monkeypatch, email_data):
    monkeypatch.delenv("CACERT_EMAIL_SECRETS", raising=False)
    with pytest.raises(InventoryError, match=r"\$CACERT_EMAIL_SECRETS is not set"):
        checked("email", email_data)


@pytest.mark.parametrize("name", [
    "ca.pem", "email.chain.pem", "community.key.pem", "mysql_postfix.password",
    "accounts/bob@cacert.test.password",
])
def test_missing_secret_is_named(secrets, email_data, name):
    (secrets / name).unlink()
    with pytest.raises(InventoryError, match=rf"secret .*/{name} is missing"):
        checked("email", email_data)


def test_empty_secret_is_named(secrets, email_data):
    write_secret(secrets, "mysql_dovecot.password", "\n")
    with pytest.raises(InventoryError, match=r"mysql_dovecot.password is empty"):
        checked("email", email_data)


def test_world_readable_secret_is_refused(secrets, email_data):
    (secrets / "email.key.pem").chmod(0o644)
    with pytest.raises(InventoryError, match=r"email.key.pem is world-readable"):
        checked("email", email_data)


def test_password_with_a_newline_in_the_middle(secrets, email_data):
    write_secret(secrets, "mysql_postfix.password", "first\nsecond\n")
    with pytest.raises(InventoryError, match=r"mysql_postfix.password: .*single line"):
        checked("email", email_data)


def test_password_with_a_quote(secrets, email_data):
    write_secret(secrets, "accounts/alice@cacert.test.password", "it's\n")
    with pytest.raises(InventoryError, match=r"alice@cacert.test.password: characters not "
                                             r"allowed in a password: \"'\""):
        checked("email", email_data)


def test_chain_that_is_not_pem(secrets, email_data):
    write_secret(secrets, "community.chain.pem", "hello, I am not a certificate\n")
    with pytest.raises(InventoryError, match=r"community.*chain: no PEM certificate"):
        checked("email", email_data)


def test_garbled_pem(secrets, email_data):
    write_secret(secrets, "community.chain.pem",
                 "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(InventoryError, match=r"community.*not a readable PEM certificate"):
        checked("email", email_data)


def test_key_that_is_not_a_key(secrets, email_data):
    write_secret(secrets, "email.key.pem", (secrets / "email.chain.pem").read_text())
    with pytest.raises(InventoryError, match=r"email.*key: no PEM private key"):
        checked("email", email_data)


def test_key_not_matching_certificate(secrets, email_data):
    write_secret(secrets, "email.key.pem", (secrets / "community.key.pem").read_text())
    with pytest.raises(InventoryError, match=r"'email'.*private key does not match the "
                                             r"certificate CN=email.cacert.test"):
        checked("email", email_data)


def test_expired_certificate(secrets, email_data, pki):
    chain, key = pki.leaf_pem(["email.cacert.test"], not_before=NOW - 400 * DAY,
                          not_after=NOW - 2 * DAY)
    write_secret(secrets, "email.chain.pem", chain)
    write_secret(secrets, "email.key.pem", key)
    with pytest.raises(InventoryError, match=r"'email'.*CN=email.cacert.test expired on"):
        checked("email", email_data)


def test_expiring_certificate_warns(secrets, email_data, pki, caplog):
    chain, key = pki.leaf_pem(["community.cacert.test"], not_after=NOW + 10 * DAY)
    write_secret(secrets, "community.chain.pem", chain)
    write_secret(secrets, "community.key.pem", key)
    checked("email", email_data)
    assert "'community'" in caplog.text and "expires in 9 days" in caplog.text


def test_incomplete_chain(secrets, email_data):
    leaf_only = (secrets / "email.chain.pem").read_text().split("-----END CERTIFICATE-----")[0]
    write_secret(secrets, "email.chain.pem", leaf_only + "-----END CERTIFICATE-----\n")
    with pytest.raises(InventoryError, match=r"'email'.*incomplete chain: no certificate for "
                                             r"the issuer CN=Test Intermediate CA"):
        checked("email", email_data)


def test_a_private_key_in_the_chain_file_is_refused(secrets, email_data):
    # The chain is uploaded with files.put, whose --diff would print the key.
    chain = (secrets / "email.chain.pem").read_text()
    key = (secrets / "email.key.pem").read_text()
    write_secret(secrets, "email.chain.pem", chain + key)
    with pytest.raises(InventoryError, match=r"'email'.*chain: holds a private key"):
        checked("email", email_data)


def test_chain_from_another_ca(secrets, email_data):
    other = PKI()
    chain, key = other.leaf_pem(["email.cacert.test"])
    write_secret(secrets, "email.chain.pem", chain)
    write_secret(secrets, "email.key.pem", key)
    with pytest.raises(InventoryError, match=r"'email'.*incomplete chain: .*Test Root CA"):
        checked("email", email_data)


def test_names_not_covered(secrets, email_data):
    email_data["certificates"]["community"]["names"].append("webmail.cacert.test")
    with pytest.raises(InventoryError, match=r"'community'.*does not cover webmail.cacert.test"):
        checked("email", email_data)


def test_wildcard_covers_one_label(secrets, email_data, pki):
    chain, key = pki.leaf_pem(["*.cacert.test"])
    write_secret(secrets, "community.chain.pem", chain)
    write_secret(secrets, "community.key.pem", key)
    checked("email", email_data)
    email_data["certificates"]["community"]["names"] = ["a.b.cacert.test"]
    with pytest.raises(InventoryError, match=r"does not cover a.b.cacert.test"):
        checked("email", email_data)


def test_unknown_certificate_key(secrets, email_data):
    email_data["certificates"]["webmail"] = dict(email_data["certificates"]["email"])
    with pytest.raises(InventoryError, match=r"certificates: unknown key\(s\) webmail"):
        checked("email", email_data)


def test_unknown_certificate_field(secrets, email_data):
    email_data["certificates"]["email"]["chain"] = "/tmp/x"
    with pytest.raises(InventoryError, match=r"certificates\['email'\]: needs exactly"):
        checked("email", email_data)


def test_unknown_inventory_key(secrets, email_data):
    email_data["mail_acounts"] = []
    with pytest.raises(InventoryError, match=r"unknown inventory keys: mail_acounts"):
        checked("email", email_data)


def test_sudo_settings_are_connection_keys(secrets, email_data):
    # An operator who becomes root on a host with sudo (README "Upgrading by rebuild").
    email_data.update({"_sudo": True, "_sudo_user": "root", "_use_sudo_login": True})
    checked("email", email_data)
    email_data["_sudo_password"] = "x"
    with pytest.raises(InventoryError, match=r"unknown inventory keys: _sudo_password"):
        checked("email", email_data)


@pytest.mark.parametrize("user", ["../x", "a/b", ".hidden", "", "Alice", "-x"])
def test_bad_mailbox_user(secrets, email_data, user):
    email_data["mail_accounts"][1]["user"] = user
    with pytest.raises(InventoryError, match=rf"mail_accounts\[1\]: user {user!r} is not a "
                                             r"valid mailbox name"):
        checked("email", email_data)


def test_duplicate_account(secrets, email_data):
    email_data["mail_accounts"][1]["user"] = "alice"
    with pytest.raises(InventoryError, match=r"mail_accounts\[1\]: 'alice' appears twice"):
        checked("email", email_data)


def test_bad_alias(secrets, email_data):
    email_data["mail_aliases"][0]["owner"] = "alice"
    with pytest.raises(InventoryError, match=r"mail_aliases\[0\] owner: 'alice' is not an "
                                             r"email address"):
        checked("email", email_data)


def test_send_as_must_be_boolean(secrets, email_data):
    email_data["mail_aliases"][0]["send_as"] = "yes"
    with pytest.raises(InventoryError, match=r"mail_aliases\[0\]: send_as must be True or False"):
        checked("email", email_data)


def test_bad_arbitration_regexp(secrets, email_data):
    email_data["arbitration_rewrites"] = [{"match": "^(unclosed@", "to": "support@cacert.test"}]
    with pytest.raises(InventoryError, match=r"arbitration_rewrites\[0\]: match .* is no regexp"):
        checked("email", email_data)


def test_bad_postfix_parameter_name(secrets, email_data):
    email_data["postfix_main_cf_extra"] = {"not a name": "x"}
    with pytest.raises(InventoryError, match=r"'not a name' is not a Postfix parameter name"):
        checked("email", email_data)


def test_bad_transport(secrets, email_data):
    email_data["transports"] = {"lists.cacert.test": "smtp:[a] b"}
    with pytest.raises(InventoryError, match=r"transports\['lists.cacert.test'\]: .* space"):
        checked("email", email_data)


def test_etc_aliases_entry_must_be_in_the_mail_domain(secrets, email_data):
    email_data["mail_aliases"][1]["alias"] = "postmaster@elsewhere.test"
    with pytest.raises(InventoryError, match=r"mail_aliases\[1\]: postmaster@elsewhere.test has "
                                             r"send_as False"):
        checked("email", email_data)


def test_only_the_bullseye_lab_goes_without_the_security_suite():
    mirror = defaults()["debian_security_mirror"]
    assert topology.security_mirror("bullseye", mirror) is None
    for release in ("bookworm", "trixie"):
        assert topology.security_mirror(release, mirror) == mirror


# --- the container's NICs and mounts ----------------------------------------------------------

def _nic(**fields):
    return {"name": "eth1", "link": "br-intra", "hwaddr": "00:16:3e:00:02:19",
            "ipv4": "172.16.2.19/24", "ipv4_gateway": None, "ipv6": None,
            "ipv6_gateway": None, **fields}


def _mount(**fields):
    return {"source": "/srv/backup", "target": "srv/backup", "type": "none",
            "options": "bind,create=dir", **fields}


def test_extra_nics_and_mounts_pass():
    data = {"root_authorized_keys": [ROOT_KEY],
            "container_extra_nets": [_nic(), _nic(name="eth2", link="br-infra",
                                                  hwaddr=None, ipv4="10.0.0.19/24",
                                                  ipv6="fd00::19/64", ipv6_gateway="fd00::1")],
            "container_mounts": [_mount(), _mount(source="/srv/logs", target="/var/log/host/",
                                                  options="rbind,ro")]}
    assert problems("infra02", data) == []


def test_every_nic_and_mount_problem_is_reported_at_once():
    data = {"root_authorized_keys": [ROOT_KEY],
            "container_net": {**defaults()["container_net"], "ipv4_gateway": "213.154.225.1"},
            "container_extra_nets": [
                _nic(name="eth0"),                                     # eth0 is container_net
                _nic(hwaddr="00:16:3e:00:02"),                         # short MAC
                _nic(name="eth2", hwaddr="01:16:3e:00:00:19"),         # multicast MAC
                _nic(name="eth3", hwaddr="00:16:3e:00:00:03", ipv4="10.0.0.300/24"),
                _nic(name="eth4", hwaddr="00:16:3e:00:00:04", ipv4="10.0.0.19",
                     ipv6="fd00::19/64", ipv6_gateway="fd01::1"),       # no prefix; gw outside
                _nic(name="eth5", hwaddr="00:16:3e:00:00:05", ipv4="10.1.0.19/24",
                     ipv4_gateway="10.1.0.1"),                          # a second IPv4 default
                _nic(name="eth6", hwaddr="00:16:3e:00:00:06", ipv4="10.2.0.0/24"),
                _nic(name="eth1", hwaddr="00:16:3e:00:00:07"),         # name twice
                _nic(name="eth8", hwaddr="00:16:3e:00:00:08", ipv4="10.3.0.8/24",
                     link="br intra"),
                {"name": "eth9"},
            ],
            "container_mounts": [
                _mount(target="../../etc"),
                _mount(target="srv/mail/"),                            # the data volume's
                _mount(source="relative/path"),
                _mount(source="/srv/x", target="srv/x", options="create=dir"),
                _mount(source="/srv/y", target="srv/y", options="bind,,ro"),
                _mount(source="/srv/z", target="srv/z", type="ext4 "),
                {"source": "/srv/w", "target": "srv/w"},
            ]}
    found = problems("infra02", data)
    assert found == [
        "container_extra_nets[0] name: eth0 is already container_net's (eth0 is container_net; "
        "each NIC needs its own name)",
        "container_extra_nets[7] name: eth1 is already container_extra_nets[1]'s (eth0 is "
        "container_net; each NIC needs its own name)",
        "container_extra_nets[9]: must be a dict with name and link (and hwaddr, ipv4, "
        "ipv4_gateway, ipv6, ipv6_gateway or None), got {'name': 'eth9'}",
        "container_extra_nets[1] hwaddr: '00:16:3e:00:02' is not a MAC address "
        "(aa:bb:cc:dd:ee:ff)",
        "container_extra_nets[2] hwaddr: 01:16:3e:00:00:19 is a multicast address; a NIC "
        "needs a unicast one (even first octet)",
        "container_extra_nets[2] ipv4: 172.16.2.19 is also container_extra_nets[1]'s",
        "container_extra_nets[3] ipv4: '10.0.0.300/24' is not an address in CIDR form "
        "(address/prefix length)",
        "container_extra_nets[4] ipv4: '10.0.0.19' is not an address in CIDR form "
        "(address/prefix length)",
        "container_extra_nets[4] ipv6_gateway: fd01::1 is not an address of eth4's network "
        "fd00::/64",
        "container_extra_nets[6] ipv4: 10.2.0.0/24 is the network's own or broadcast "
        "address, not a host's",
        "container_extra_nets[8] link: 'br intra' is not a bridge name on the host",
        "ipv4_gateway: set on container_net and container_extra_nets[5]; the container has "
        "one default route per address family: keep it on one NIC",
        "container_mounts[0] target: '../../etc' must be a path inside the container (below "
        "its root, without '.' or '..')",
        "container_mounts[1] target: srv/mail is already data_volume's mount point",
        "container_mounts[2] source: 'relative/path' must be an absolute path on the host "
        "without '..' (a bind mount's source)",
        "container_mounts[3] options: type none needs bind or rbind in 'create=dir'",
        "container_mounts[4] options: '' in 'bind,,ro' is not a mount option",
        "container_mounts[5] type: 'ext4 ' must be a non-empty string without spaces (it is "
        "one field of the mount entry)",
        "container_mounts[6]: must be a dict with exactly source, target, type, options, "
        "got {'source': '/srv/w', 'target': 'srv/w'}",
    ], found


def test_nic_and_mount_problems_stop_the_inventory_before_any_host(capsys):
    with pytest.raises(SystemExit):
        stop_unless_valid(infra02=[("infra02", {
            "root_authorized_keys": [ROOT_KEY],
            "container_extra_nets": [_nic(ipv4_gateway="10.9.9.9")],
            "container_mounts": [_mount(target="/")]})])
    err = capsys.readouterr().err
    assert "The inventory has 2 problems; no host was contacted:" in err
    assert "  infra02: container_extra_nets[0] ipv4_gateway: 10.9.9.9 is not an address of " \
        "eth1's network 172.16.2.0/24" in err
    assert "  infra02: container_mounts[0] target: '/' must be a path inside the container" in err


def test_placeholders_in_nic_data_are_named_once_as_placeholders():
    nic = _nic(link="PLACEHOLDER-bridge", hwaddr="PLACEHOLDER-mac",
               ipv4="172.16.2.19/PLACEHOLDER-prefix")
    data = {"root_authorized_keys": [ROOT_KEY], "container_extra_nets": [nic]}
    expected = [f"container_extra_nets[0][{field!r}]: {nic[field]!r} is a placeholder; set the "
                "real value in the inventory before the first production run"
                for field in ("link", "hwaddr", "ipv4")]
    assert problems("infra02", data) == expected
    production = problems("infra02", data, production=True)
    assert [line for line in production if "container_extra_nets" in line] == expected
