"""DKIM signing: OpenDKIM as Postfix's milter, with a key made once on the server.

- The key is generated on the server (`opendkim-genkey`) only when the key file is absent, so
  a re-deploy, a new control machine or a lost secrets directory never replaces a key whose
  public half is published in DNS. It lives at /etc/opendkim/keys/<domain>/<selector>.private
  (owner opendkim, 0600), where the DNS report (operations/dns_report.py) reads it to print the
  TXT record; `<selector>.txt` beside it is opendkim-genkey's own zone-file line.
- /etc/opendkim.conf is rendered, checked with `opendkim -n` on a staged copy and only then
  installed (operations/staging.py); OpenDKIM restarts when it, its unit drop-in or the key
  changed.
- Postfix uses it through `smtpd_milters`/`non_smtpd_milters` (files/postfix/main.cf.j2, when
  `dkim_signing` is on); what gets signed is explained in files/dkim/opendkim.conf.j2.
"""
import re

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

from operations import staging

CONFIG = "/etc/opendkim.conf"
KEY_ROOT = "/etc/opendkim/keys"  # the same place operations/dns_report.py reads
DROP_IN = "/etc/systemd/system/opendkim.service.d/cacert-email.conf"
KEY_BITS = 2048  # 2048-bit RSA: the size every verifier accepts and a TXT record still holds


class DkimDataError(ValueError):
    """A dkim_* inventory datum is unusable; the message names the key."""


def settings(data):
    """Template variables for this host, validated."""
    selector = data["dkim_selector"]
    # A selector is a DNS label (or several): letters, digits, hyphens, dots.
    if not isinstance(selector, str) or \
            not re.match(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$", selector):
        raise DkimDataError(f"dkim_selector: {selector!r} is not a DNS label")
    port = data["dkim_milter_port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
        raise DkimDataError(f"dkim_milter_port: {port!r} is not a port number 1024-65535")
    domain = data["mail_domain"]
    key_dir = f"{KEY_ROOT}/{domain}"
    return {"domain": domain, "selector": selector, "port": port, "key_dir": key_dir,
            "key_file": f"{key_dir}/{selector}.private", "config": CONFIG}


def genkey_command(values):
    """Make the key unless it exists (the shell re-checks: never overwrite a published key)."""
    key, key_dir = values["key_file"], values["key_dir"]
    return (f"test -e {key} || {{ opendkim-genkey -b {KEY_BITS} -h sha256 -r "
            f"-D {key_dir} -d {values['domain']} -s {values['selector']} && "
            f"chown opendkim:opendkim {key} {key_dir}/{values['selector']}.txt && "
            f"chmod 600 {key}; }}")


def config_files(values):
    return [
        staging.ConfigFile(CONFIG, staging.render("files/dkim/opendkim.conf.j2", **values)),
        staging.ConfigFile(DROP_IN, staging.render("files/dkim/opendkim-service.conf.j2",
                                                   **values)),
    ]


@deploy("DKIM signing (OpenDKIM)")
def signer():
    if not host.data.dkim_signing:
        host.noop("dkim_signing is off")
        return
    values = settings(host.data.dict())
    apt.packages(name="OpenDKIM", packages=["opendkim", "opendkim-tools"])
    files.directory(name="/etc/opendkim", path="/etc/opendkim", mode="755")
    files.directory(name=f"{KEY_ROOT} (readable by opendkim only)", path=KEY_ROOT,
                    user="root", group="opendkim", mode="750")
    files.directory(name=f"Key directory for {values['domain']}", path=values["key_dir"],
                    user="opendkim", group="opendkim", mode="750")
    changed = []
    # Decided on the host's state: only a host without the key gets the generation step.
    if not host.get_fact(File, path=values["key_file"]):
        changed.append(server.shell(
            name=f"DKIM key for selector {values['selector']} (made once, on the server)",
            commands=[genkey_command(values)]))
    config = staging.files(
        name="OpenDKIM configuration (checked with opendkim -n before it is used)",
        config_files=config_files(values),
        stage=f"{staging.STAGING_ROOT}/opendkim",
        check="opendkim -n -x {stage}/opendkim.conf",
    )
    changed.append(config)
    systemd.service(name="Restart OpenDKIM (configuration or key changed)", service="opendkim",
                    running=True, enabled=True, restarted=True, daemon_reload=True,
                    _if=lambda: any(op.did_change() for op in changed))
    systemd.service(name="OpenDKIM running", service="opendkim", running=True, enabled=True)


# --- lab only: the lab DNS publishes the record --------------------------------------------------

def dnsmasq_txt_records(domain, keys):
    """[(name, [character-strings])] of the DKIM TXT records for {selector: public key PEM},
    exactly as the DNS report prints them (for dnsmasq `txt-record=` lines)."""
    from operations import dns_report
    records = []
    for selector, pem in sorted(keys.items()):
        name, _, _, value = dns_report.dkim_record(domain, selector, pem).split("\t")
        records.append((name.rstrip("."), re.findall(r'"((?:[^"\\]|\\.)*)"', value)))
    return records


def lab_txt_records(lab_host, rootfs):
    """The DKIM records of the keys in the container's rootfs, read on the lab host (none
    before the first email deploy has made a key: the next lab host run adds it)."""
    from pyinfra.facts.server import Command

    from operations import dns_report
    domain = lab_host.data.mail_domain
    listing = lab_host.get_fact(Command, command=dns_report._DKIM_COMMAND.format(
        dir=f"{rootfs}{KEY_ROOT}", domain=domain)) or ""
    return dnsmasq_txt_records(domain, dns_report.parse_dkim_keys(listing))
