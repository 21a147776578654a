"""cacert-email: everything on Infra02 and in the email container, in order.

    pyinfra inventories/prod.py deploy.py            # production
    pyinfra inventories/lab.py deploy.py             # the lab (see README)
    pyinfra inventories/lab_backup.py deploy.py      # the lab's backup host (off-host copy)

This file only composes; each step lives in operations/<concern>.py.
"""
from pyinfra import host

from operations import (backup, backup_host, base, certificates, crl, dkim, dovecot, fail2ban, firewall,
                        icinga2_agent, infra02, lab_host, lab_icinga_master,
                        lab_selfservice_repo, mailstore,
                        mariadb, migration, monitoring, nginx, postfix, puppet,
                        selfservice_api, volume_owner)

if "lab_host" in host.groups:
    lab_host.prepare()
    lab_icinga_master.master()
    lab_selfservice_repo.repository()
    crl.lab_published()  # served beside the repository
if "infra02" in host.groups:
    infra02.container()
if "email" in host.groups:
    base.system()
    puppet.removed()  # first: a Puppet agent left running would undo this deploy
    selfservice_api.account()  # before certificates: the API's key is installed for its group
    certificates.install()
    mariadb.server()
    dkim.signer()  # before Postfix hands it mail as a milter
    volume_owner.guard()  # before Dovecot's package first starts it
    postfix.server()
    mailstore.install()
    migration.move_mail()  # before Dovecot reads the new mail_root; leaves delivery deferred
    dovecot.server()
    migration.resume_delivery()  # after Dovecot reads the new root: the queued mail goes in
    backup.server()
    backup_host.pull_access()  # after the repository: the backup host's read-only copy of it
    icinga2_agent.agent()
    monitoring.checks()  # after the agent: its nagios user and the Icinga CA
    selfservice_api.install()
    crl.refresh()  # after the API: a new CRL restarts it
    nginx.server()
    fail2ban.server()
    firewall.nftables()
if "backup_host" in host.groups:
    mailstore.install()  # verify and restore of the copies, `mailstore check backup-copy`
    backup_host.copies()
