"""cacertusers in the lab: local only, service accounts limited to their views, seeded rows."""
import pytest

# The service account's password is read inside the container from the file its service uses,
# and handed to the client in the environment: it never appears on a command line.
AS_ACCOUNT = {
    "postfix": "MYSQL_PWD=$(sed -n 's/^password = //p' /etc/postfix/mysql-aliases.cf) "
               "mariadb --batch --skip-column-names -u postfix cacertusers -e ",
    # Dovecot 2.3: `connect = ... password=X ...`; Dovecot 2.4: `password = X` in a mysql block.
    "dovecot": "MYSQL_PWD=$(sed -n -e 's/.*password=\\([^ ]*\\).*/\\1/p' "
               "-e 's/^ *password = //p' "
               "/etc/dovecot/dovecot-sql.conf.ext) "
               "mariadb --batch --skip-column-names -u dovecot cacertusers -e ",
}


def query(ssh, account, sql, check=True):
    return ssh(AS_ACCOUNT[account] + f'"{sql}"', check=check)


def test_listens_on_loopback_only(ssh):
    listening = ssh("ss -Hltn 'sport = :3306'").stdout.split("\n")
    addresses = [line.split()[3] for line in listening if line.strip()]
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses


@pytest.mark.parametrize("account,view", [
    ("postfix", "postfix_mailboxes"), ("postfix", "postfix_aliases"),
    ("postfix", "postfix_sender_logins"), ("dovecot", "dovecot_users")])
def test_service_account_reads_its_views(ssh, account, view):
    assert query(ssh, account, f"SELECT COUNT(*) FROM {view}").stdout.strip().isdigit()


@pytest.mark.parametrize("account,target", [
    ("postfix", "users"), ("postfix", "aliases"), ("postfix", "dovecot_users"),
    ("dovecot", "users"), ("dovecot", "postfix_aliases")])
def test_service_account_cannot_read_anything_else(ssh, account, target):
    result = query(ssh, account, f"SELECT * FROM {target}", check=False)
    assert result.returncode != 0 and "command denied" in result.stderr, result.stderr


@pytest.mark.parametrize("account", ["postfix", "dovecot"])
def test_service_account_cannot_write(ssh, account):
    view = "postfix_aliases" if account == "postfix" else "dovecot_users"
    result = query(ssh, account, f"DELETE FROM {view}", check=False)
    assert result.returncode != 0 and "command denied" in result.stderr, result.stderr


def test_seeded_accounts_and_send_as_aliases(ssh, lab):
    logins = query(ssh, "dovecot", "SELECT login FROM dovecot_users").stdout.split()
    assert {a["email"] for a in lab["accounts"]} <= set(logins)
    senders = query(ssh, "postfix", "SELECT address, owner FROM postfix_sender_logins").stdout
    pairs = {tuple(line.split("\t")) for line in senders.splitlines()}
    for alias in lab["aliases"]:
        assert ((alias["alias"], alias["owner"]) in pairs) is alias["send_as"]
    hashes = query(ssh, "dovecot", "SELECT password FROM dovecot_users").stdout.split()
    assert hashes and all(h.startswith("{BLF-CRYPT}$2b$") for h in hashes)
