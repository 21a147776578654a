#!/bin/sh
# The lab's Icinga2 master, run from its own directory tree without systemd.
#
#   master.sh DIR setup MASTER_CN AGENT_CN TICKET_FILE   secrets, CA, master cert, agent ticket
#   master.sh DIR validate | start | reload | stop
#
# Uploaded and called by operations/lab_icinga_master.py. Secrets (ticket salt, API passwords)
# are generated here, once, into DIR/secrets (0700) and never pass through pyinfra's output.
# The master runs as root with every path under DIR, so it shares nothing with Debian's
# /etc/icinga2 or with another Icinga2 a test may run on loopback.
set -eu

dir=$1 cmd=$2
shift 2
conf="$dir/etc/icinga2.conf"
pidfile="$dir/run/icinga2.pid"
icinga() {
    icinga2 "$@" -DConfigDir="$dir/etc" -DDataDir="$dir/lib" -DLogDir="$dir/log" \
        -DCacheDir="$dir/cache" -DSpoolDir="$dir/spool" -DInitRunDir="$dir/run" \
        -DRunAsUser=root -DRunAsGroup=root
}
alive() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
# Processes of a master from this same tree whose pidfile is gone (e.g. `.lab/` was removed
# and made anew): found by their exact config file argument, never by a name.
stale() {
    for proc in /proc/[0-9]*; do
        if tr '\0' '\n' <"$proc/cmdline" 2>/dev/null | grep -qxF -- "$conf"; then
            echo "${proc#/proc/}"
        fi
    done
}
terminate() {  # pids...: TERM, then KILL what is left after 10 s
    [ $# -gt 0 ] || return 0
    kill "$@" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$@" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$@" 2>/dev/null || true
}
random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

case $cmd in
setup)
    master=$1 agent=$2 ticket_file=$3
    umask 077
    mkdir -p "$dir/etc" "$dir/etc/agents.d" "$dir/lib" "$dir/log" "$dir/cache" "$dir/spool" \
        "$dir/run" "$dir/secrets"
    for name in ticket-salt lab-reader.password mailstore.password; do
        [ -s "$dir/secrets/$name" ] || random >"$dir/secrets/$name"
    done
    {
        echo "const TicketSalt = \"$(cat "$dir/secrets/ticket-salt")\""
        echo "const LabReaderPassword = \"$(cat "$dir/secrets/lab-reader.password")\""
        echo "const MailstorePassword = \"$(cat "$dir/secrets/mailstore.password")\""
    } >"$dir/etc/secrets.conf.new"
    mv "$dir/etc/secrets.conf.new" "$dir/etc/secrets.conf"
    [ -s "$dir/lib/ca/ca.crt" ] || icinga pki new-ca
    if [ ! -s "$dir/lib/certs/$master.crt" ]; then
        mkdir -p "$dir/lib/certs"
        icinga pki new-cert --cn "$master" --key "$dir/lib/certs/$master.key" \
            --csr "$dir/lib/certs/$master.csr"
        icinga pki sign-csr --csr "$dir/lib/certs/$master.csr" \
            --cert "$dir/lib/certs/$master.crt"
    fi
    cp "$dir/lib/ca/ca.crt" "$dir/lib/certs/ca.crt"
    mkdir -p "$(dirname "$ticket_file")"
    icinga pki ticket --cn "$agent" --salt "$(cat "$dir/secrets/ticket-salt")" \
        >"$ticket_file.new"
    mv "$ticket_file.new" "$ticket_file"
    ;;
validate)
    icinga daemon -C -c "$conf" -x warning
    ;;
start)
    alive && exit 0
    icinga daemon -C -c "$conf" -x warning
    # shellcheck disable=SC2046
    terminate $(stale)
    rm -f "$pidfile"
    icinga daemon -c "$conf" --daemonize -e "$dir/log/error.log"
    for _ in $(seq 100); do alive && exit 0; sleep 0.1; done
    echo "the lab Icinga2 master did not start: see $dir/log/icinga2.log" >&2
    exit 1
    ;;
reload)
    icinga daemon -C -c "$conf" -x warning
    if alive; then kill -HUP "$(cat "$pidfile")"; else "$0" "$dir" start; fi
    ;;
stop)
    # shellcheck disable=SC2046
    terminate $(stale)
    rm -f "$pidfile"
    ;;
*)
    echo "usage: master.sh DIR setup|validate|start|reload|stop" >&2
    exit 2
    ;;
esac
