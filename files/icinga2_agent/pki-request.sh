#!/bin/sh
# Get this agent's certificate signed by the Icinga2 parent (master or satellite) with a ticket.
#
#   pki-request.sh CN PARENT_HOST PARENT_PORT TICKET_FILE
#
# Managed by the cacert-email deploy (operations/icinga2_agent.py). The ticket is a secret:
# the deploy uploads it to TICKET_FILE (0600) and this script reads it there, so that it never
# appears in the deploy's output. `icinga2 pki request` only takes it as an argument, so it is
# visible in this host's process list for the second the request takes (root-only host).
# Does nothing when the agent already holds a certificate signed by the parent's CA.
set -eu

cn=$1 parent_host=$2 parent_port=$3 ticket_file=$4
certs=/var/lib/icinga2/certs

if [ -s "$certs/ca.crt" ] && [ -s "$certs/$cn.crt" ] &&
   openssl verify -CAfile "$certs/ca.crt" "$certs/$cn.crt" >/dev/null 2>&1; then
    rm -f "$ticket_file"
    exit 0
fi

install -d -o nagios -g nagios -m 0700 "$certs"
if [ ! -s "$certs/$cn.key" ]; then
    icinga2 pki new-cert --cn "$cn" --key "$certs/$cn.key" --cert "$certs/$cn.crt"
fi
# Trust on first use, as `icinga2 node setup` does: the parent's certificate is fetched here,
# and `pki request` then talks only to a peer presenting exactly that certificate; the CA the
# parent returns must have signed it (checked below).
icinga2 pki save-cert --host "$parent_host" --port "$parent_port" \
    --trustedcert "$certs/trusted-parent.crt"
icinga2 pki request --host "$parent_host" --port "$parent_port" \
    --ticket "$(cat "$ticket_file")" \
    --key "$certs/$cn.key" --cert "$certs/$cn.crt" \
    --trustedcert "$certs/trusted-parent.crt" --ca "$certs/ca.crt"
openssl verify -CAfile "$certs/ca.crt" "$certs/trusted-parent.crt" >/dev/null
openssl verify -CAfile "$certs/ca.crt" "$certs/$cn.crt" >/dev/null
chown -R nagios:nagios "$certs"
rm -f "$ticket_file"
