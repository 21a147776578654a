#!/bin/sh
# Fills the lab's legacy container as the Puppet era left the live server (run as root by
# lab/legacy/builder.py after the packages are in and the files of lab/legacy/rootfs are in
# place). Idempotent: a run killed half-way is simply run again.
set -eu
cd /root/cacert-lab-legacy

# --- the mail owner, uid/gid 2000 -------------------------------------------------------------
getent group vmail >/dev/null || groupadd -g 2000 vmail
getent passwd vmail >/dev/null || useradd -u 2000 -g 2000 -d /home/mailboxes -M -s /usr/sbin/nologin vmail
install -d -o 2000 -g 2000 -m 0750 /home/mailboxes
echo email.cacert.test > /etc/mailname

# --- MariaDB: schema, service accounts with the legacy's own passwords, accounts -------------
# The passwords go only into the configs and into MariaDB (through stdin), never onto a
# command line.
new_password() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
POSTFIX_DB_PASSWORD=$(new_password)
DOVECOT_DB_PASSWORD=$(new_password)
export POSTFIX_DB_PASSWORD DOVECOT_DB_PASSWORD
mysql < cacertusers.sql
mysql < users.sql
mysql <<SQL
CREATE OR REPLACE USER 'postfix'@'localhost' IDENTIFIED BY '$POSTFIX_DB_PASSWORD';
CREATE OR REPLACE USER 'dovecot'@'localhost' IDENTIFIED BY '$DOVECOT_DB_PASSWORD';
GRANT SELECT ON cacertusers.users TO 'postfix'@'localhost';
GRANT SELECT ON cacertusers.aliases TO 'postfix'@'localhost';
GRANT SELECT ON cacertusers.legacy_dovecot_passdb TO 'dovecot'@'localhost';
FLUSH PRIVILEGES;
SQL
for f in /etc/postfix/mysql-virtual-mailbox-maps.cf /etc/postfix/mysql-virtual-alias-maps.cf \
         /etc/postfix/mysql-sender-login-maps.cf; do
    perl -pi -e 's/\@\@POSTFIX_DB_PASSWORD\@\@|(?<=^password = ).*/$ENV{POSTFIX_DB_PASSWORD}/' "$f"
    chown root:postfix "$f"; chmod 0640 "$f"
done
f=/etc/dovecot/dovecot-sql.conf.ext
perl -pi -e 's/(?<=user=dovecot password=)\S+/$ENV{DOVECOT_DB_PASSWORD}/' "$f"
chown root:dovecot "$f"; chmod 0640 "$f"

# --- TLS keys: readable by root only ---------------------------------------------------------
chmod 0600 /etc/ssl/private/email.cacert.test.key /etc/ssl/private/community.cacert.test.key
chmod 0644 /etc/ssl/certs/email.cacert.test.pem /etc/ssl/certs/community.cacert.test.pem

# --- Postfix maps ----------------------------------------------------------------------------
newaliases
postmap /etc/postfix/cacert-inc-bcc /etc/postfix/transport

# --- mail that was already there: Maildirs owned by 2000 -------------------------------------
message() {  # dir file subject
    [ -e "$1/$2" ] && return 0
    printf 'From: webmaster@cacert.test\nTo: %s@cacert.test\nSubject: %s\nDate: Mon, 1 Mar 2021 10:00:00 +0000\nMessage-ID: <%s@email.cacert.test>\n\nWritten in the Puppet era.\n' \
        "$user" "$3" "$2" > "$1/$2"
}
maildir() { for d in "$1" "$1/cur" "$1/new" "$1/tmp"; do mkdir -p "$d"; done; }
for user in alice bob dave; do
    maildir "/home/mailboxes/$user/Maildir"
done
user=alice
message /home/mailboxes/alice/Maildir/cur 1614592800.M1P100.email:2,S "old read mail"
message /home/mailboxes/alice/Maildir/cur 1614592801.M2P100.email:2,FS "old flagged mail"
message /home/mailboxes/alice/Maildir/new 1614592802.M3P100.email "old unread mail"
maildir /home/mailboxes/alice/Maildir/.Lists
message /home/mailboxes/alice/Maildir/.Lists/cur 1614592803.M4P100.email:2,S "a list post"
printf 'Lists\n' > /home/mailboxes/alice/Maildir/subscriptions
user=bob
message /home/mailboxes/bob/Maildir/cur 1614592804.M5P100.email:2,S "bob's old mail"
user=dave
message /home/mailboxes/dave/Maildir/cur 1614592805.M6P100.email:2,S "dave's last mail"
chown -R 2000:2000 /home/mailboxes
chmod -R u=rwX,go= /home/mailboxes/alice /home/mailboxes/bob /home/mailboxes/dave

# --- services --------------------------------------------------------------------------------
install -d /var/spool/legacy-extra
postfix check
doveconf -n >/dev/null
systemctl restart dovecot postfix
rm -f users.sql
touch /root/.cacert-lab-legacy-built
