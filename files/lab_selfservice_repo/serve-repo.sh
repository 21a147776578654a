#!/bin/sh
# Serve the lab's apt repository over http on ADDRESS:PORT, detached, with a pidfile.
#
#   serve-repo.sh DIRECTORY ADDRESS PORT PIDFILE LOGFILE
#
# Called by operations/lab_selfservice_repo.py when PIDFILE names no live process (there is no
# systemd on the lab host). The server looks DIRECTORY up by path on every request, so a
# rebuilt repository is served without a restart.
set -eu
directory=$1 address=$2 port=$3 pidfile=$4 logfile=$5
# A server for this directory that lost its pidfile (`.lab/` removed and made anew) is
# adopted: found by its exact --directory argument, never by a name.
for proc in /proc/[0-9]*; do
    args=$(tr '\0' '\n' <"$proc/cmdline" 2>/dev/null) || continue
    if echo "$args" | grep -qxF http.server && echo "$args" | grep -qxF -- "$directory"; then
        echo "${proc#/proc/}" >"$pidfile"
        exit 0
    fi
done
setsid python3 -m http.server "$port" --bind "$address" --directory "$directory" \
    </dev/null >>"$logfile" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 50); do
    if python3 -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)" \
        "$address" "$port" 2>/dev/null; then
        exit 0
    fi
    sleep 0.1
done
echo "the lab apt repository server did not start: see $logfile" >&2
exit 1
