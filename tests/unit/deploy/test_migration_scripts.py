"""files/migration/ run for real against directories: every outcome of the deploy's move step.

mail-migrate, mail-quiesce and mail-resume are installed into a temporary sbin (as the deploy
installs them into /usr/local/sbin, mode 755) and run with the real `mailstore` of this
repository against temporary OLD and NEW roots. Only the commands that act on services that
do not run here are stand-ins (below, each saying why). They keep the state the real ones
would change — Postfix's defer_transports, whether Dovecot runs — so every test can ask the
one question that matters: is the server serving (Dovecot up, delivery not deferred, no held
file), or held with a held file whose one line tells the operator what to do, which the
monitoring's mailq check turns CRITICAL?
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from operations import migration, monitoring  # noqa: E402
from operations.defaults import defaults  # noqa: E402

SCRIPTS = ("mail-migrate", "mail-quiesce", "mail-resume")

# Stand-ins, on PATH before the system's. Each appends its command line to calls.log.
STANDINS = {
    # postconf(1) edits /etc/postfix/main.cf of a Postfix that is not installed here; this one
    # keeps each parameter the scripts touch in a file named for it (defer_transports: defer).
    "postconf": """
        file() { if [ "$1" = defer_transports ]; then echo "$STATE/defer";
                 else echo "$STATE/$1"; fi; }
        case "$1" in
          -e) name=${2%%=*}; name=${name% }; value=${2#*=}; echo "${value# }" >"$(file "$name")" ;;
          -h) cat "$(file "$2")" 2>/dev/null || true ;;
          -X) shift; for name in "$@"; do : >"$(file "$name")"; done ;;
        esac""",
    # `postfix reload` signals a running Postfix master; there is none here.
    "postfix": "",
    # postqueue(1) talks to Postfix's queue manager; none here. `-j` lists an empty queue.
    "postqueue": "",
    # doveadm kick talks to a running Dovecot; none here.
    "doveadm": "",
    # systemctl needs systemd as PID 1 and a dovecot unit; neither exists here. Dovecot's
    # state is a file; FAIL_SYSTEMCTL="start stop" makes those actions fail (a unit that does
    # not start, a stop that times out).
    "systemctl": """
        case " ${FAIL_SYSTEMCTL:-} " in
          *" $1 "*) echo "systemctl $1 dovecot failed" >&2; exit 1 ;;
        esac
        case "$1" in
          start) echo active >"$STATE/dovecot" ;;
          stop) echo inactive >"$STATE/dovecot" ;;
        esac""",
}


class Server:
    """The temporary server: roots, installed scripts, stand-ins and their state."""

    def __init__(self, tmp):
        self.old, self.new = tmp / "home" / "mailboxes", tmp / "srv" / "mail"
        self.sbin, self.bin, self.state = tmp / "sbin", tmp / "bin", tmp / "state"
        self.held, self.log = tmp / "lib" / "delivery-held", tmp / "mail-migrate.log"
        for d in (self.old, self.new, self.sbin, self.bin, self.state):
            d.mkdir(parents=True)
        for name in SCRIPTS:
            shutil.copy(REPO / "files" / "migration" / name, self.sbin / name)
            (self.sbin / name).chmod(0o755)
        for name, body in STANDINS.items():
            self._script(name, 'echo "%s $*" >>"$STATE/calls.log"\n%s\n' % (name, body))
        # The real mailstore of this repository, started as /usr/local/bin/mailstore (the
        # venv's console script) starts it.
        self.mailstore = self._script("mailstore", 'exec "%s" -m mailstore "$@"' % sys.executable)
        (self.state / "dovecot").write_text("active\n")
        self.env = dict(os.environ, PATH="%s:%s" % (self.bin, os.environ["PATH"]),
                        PYTHONPATH=str(REPO), STATE=str(self.state),
                        MAIL_MIGRATE_MAILSTORE=str(self.mailstore),
                        MAIL_MIGRATE_LOG=str(self.log), MAIL_HELD_FILE=str(self.held))

    def _script(self, name, body):
        path = self.bin / name
        path.write_text("#!/bin/sh\nset -eu\n%s\n" % body)
        path.chmod(0o755)
        return path

    def add_user(self, user, messages=2):
        """A Maildir as Dovecot leaves it: new/, cur/, tmp/, messages in cur/."""
        md = self.old / user / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (md / sub).mkdir(parents=True)
        for n in range(messages):
            (md / "cur" / ("16000000%02d.M1P1.host:2,S" % n)).write_text(
                "Subject: %d for %s\n\nbody\n" % (n, user))

    def run(self, *args, env=None):
        return subprocess.run([str(self.sbin / args[0])] + [str(a) for a in args[1:]],
                              env=dict(self.env, **(env or {})), capture_output=True,
                              text=True, timeout=300)

    def migrate(self, env=None):
        return self.run("mail-migrate", self.old, self.new, env=env)

    def deferred(self):
        path = self.state / "defer"
        return path.read_text().strip() if path.exists() else ""

    def dovecot(self):
        return (self.state / "dovecot").read_text().strip()

    def calls(self):
        path = self.state / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def journal_done(self):
        path = self.new / migration.JOURNAL
        if not path.exists():
            return set()
        return {e["user"] for e in map(json.loads, path.read_text().splitlines())
                if e.get("event") == "done"}

    def check_mailq(self):
        """The monitoring's check, as operations/monitoring.py declares it."""
        args = [a if a != migration.HELD_FILE else str(self.held)
                for a in dict((s[0], s[2]) for s in _services())["mailstore-mailq"]]
        return subprocess.run([str(self.mailstore), "check", "mailq", *args,
                               "--postqueue", str(self.bin / "postqueue")],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def assert_serving(self):
        assert self.dovecot() == "active"
        assert self.deferred() == ""
        assert not self.held.exists(), self.held.read_text()
        assert self.check_mailq().returncode == 0

    def assert_held(self, *instruction, dovecot="inactive"):
        """Held, loudly: Dovecot stopped, delivery deferred, one line saying what to do, in
        the held file and on stderr, and the monitoring CRITICAL with it."""
        assert dovecot is None or self.dovecot() == dovecot
        assert self.deferred() == "local lmtp"
        lines = self.held.read_text().splitlines()
        assert len(lines) == 1, lines
        for words in instruction:
            assert words in lines[0], lines[0]
        check = self.check_mailq()
        assert check.returncode == 2, check.stdout
        assert check.stdout.startswith("MAILQ CRITICAL - delivery held for ")
        assert lines[0].split(" (mail-migrate, ")[0] in check.stdout
        return lines[0]


def _services():
    """The active checks operations/monitoring.py declares for the default inventory."""
    return monitoring.services(defaults())


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path)


def test_scripts_use_the_held_file_the_monitoring_checks():
    for name in SCRIPTS:
        assert migration.HELD_FILE in (REPO / "files" / "migration" / name).read_text(), name
    assert ["--held", migration.HELD_FILE] == \
        [a for s in _services() if s[0] == "mailstore-mailq" for a in s[2]]


def test_every_user_cut_over_holds_until_the_deploy_switches_dovecot(server):
    server.add_user("alice")
    server.add_user("bob")
    result = server.migrate()
    assert result.returncode == 0, result.stderr
    assert server.journal_done() == {"alice", "bob"}
    assert (server.new / "alice" / "Maildir" / "cur").is_dir()
    line = server.assert_held("all 2 users cut over to %s" % server.new, "run the deploy again")
    assert line in result.stderr
    assert json.loads(server.log.read_text().splitlines()[-1])["exit"] == 0


def test_dovecot_switch_failing_after_the_move_stays_critical_until_resumed(server):
    """dovecot.server() fails after a complete move: pyinfra stops the host's deploy, so
    resume_delivery() never runs. The held file stays (CRITICAL, "run the deploy again");
    the next deploy finds delivery deferred and runs mail-resume, which clears it."""
    server.add_user("alice")
    assert server.migrate().returncode == 0
    # ... dovecot.server() fails here; nothing else runs ...
    server.assert_held("run the deploy again")
    state = {"users": [], "done": ["alice"], "deferred": server.deferred()}
    assert migration.pending(state) == [] and state["deferred"]   # resume_delivery's test
    resumed = server.run("mail-resume")
    assert resumed.returncode == 0, resumed.stderr
    server.assert_serving()
    assert "postqueue -f" in server.calls()


def test_all_cut_over_but_mailstore_failing_holds_with_its_summary(server, tmp_path):
    server.add_user("alice")
    # The one stand-in around mailstore: no input makes the real mailstore exit non-zero after
    # every user is verified and journaled (it exits 0 exactly when every user is), but it
    # can die right after (killed, OOM). It runs the real mailstore, then exits 1.
    real = server.mailstore
    dying = tmp_path / "mailstore-dies-after-its-work"
    dying.write_text('#!/bin/sh\n"%s" "$@"\n'
                     'case " $* " in *" --dry-run "*) ;; *) exit 1 ;; esac\n' % real)
    dying.chmod(0o755)
    result = server.migrate(env={"MAIL_MIGRATE_MAILSTORE": str(dying)})
    assert result.returncode == 1
    assert server.journal_done() == {"alice"}
    server.assert_held("all 1 users cut over", "mailstore exited 1",
                       "summary in %s" % server.log, "run the deploy again")


def test_some_users_cut_over_holds_and_the_next_run_finishes(server):
    """bob's target holds a directory the migration did not create: bob is refused, alice
    is cut over. Delivery must not resume on OLD (alice's mail would land in the old tree)."""
    server.add_user("alice")
    server.add_user("bob")
    (server.new / "bob").mkdir()
    result = server.migrate()
    assert result.returncode == 1
    assert server.journal_done() == {"alice"}
    line = server.assert_held("only alice of alice, bob cut over", "fix the cause",
                              "run the deploy again")
    assert line in result.stderr
    # the operator removes the stray directory; the deploy runs mail-migrate again
    (server.new / "bob").rmdir()
    again = server.migrate()
    assert again.returncode == 0, again.stderr
    assert server.journal_done() == {"alice", "bob"}
    # (on one file system alice's home was renamed away: OLD holds bob only now)
    server.assert_held("users cut over to %s" % server.new)
    assert server.run("mail-resume").returncode == 0
    server.assert_serving()


def test_no_user_cut_over_resumes_on_the_old_root(server):
    server.add_user("alice")
    server.add_user("bob")
    (server.new / "alice").mkdir()
    (server.new / "bob").mkdir()
    result = server.migrate()
    assert result.returncode == 1
    assert "no user cut over" in result.stderr
    assert server.journal_done() == set()
    server.assert_serving()
    assert (server.old / "alice" / "Maildir" / "cur").is_dir()
    assert "postqueue -f" in server.calls()


def test_a_failing_quiesce_resumes_on_the_old_root(server):
    server.add_user("alice")
    result = server.migrate(env={"FAIL_SYSTEMCTL": "stop"})
    assert result.returncode == 1
    assert server.journal_done() == set()
    server.assert_serving()


def test_a_failing_resume_after_no_cut_over_is_critical(server):
    """systemd cannot stop Dovecot (the quiesce fails after deferring delivery: nothing is cut
    over) nor start it: mail-resume fails before it lifts the deferral. Not silent."""
    server.add_user("alice")
    result = server.migrate(env={"FAIL_SYSTEMCTL": "stop start"})
    assert result.returncode == 1
    assert server.journal_done() == set()
    line = server.assert_held("mail-resume failed", "run %s" % (server.sbin / "mail-resume"),
                              dovecot=None)
    assert line in result.stderr


def test_mailstore_unable_to_say_who_is_cut_over_holds(server, tmp_path):
    server.add_user("alice")
    # The one stand-in around mailstore: its dry run failing without a summary (a crash) is
    # not something a real input provokes. The real move runs; the dry run prints a traceback.
    broken = tmp_path / "mailstore-dry-run-crashes"
    broken.write_text('#!/bin/sh\ncase " $* " in *" --dry-run "*) '
                      'echo "Traceback (most recent call last):"; exit 1 ;; esac\n'
                      'exec "%s" "$@"\n' % server.mailstore)
    broken.chmod(0o755)
    result = server.migrate(env={"MAIL_MIGRATE_MAILSTORE": str(broken)})
    assert result.returncode == 1
    server.assert_held("cannot say which users are cut over",
                       "mailstore migrate %s %s --dry-run" % (server.old, server.new))


@pytest.mark.parametrize("old_exists", [True, False])
def test_no_user_directories_hold_until_the_switch(server, old_exists):
    """Nothing to copy (only lost+found and dot-entries, or no old root at all)."""
    if old_exists:
        (server.old / "lost+found").mkdir()
        (server.old / ".mailstore-migrate").mkdir()
    else:
        server.old.rmdir()
    result = server.migrate()
    assert result.returncode == 0, result.stderr
    server.assert_held("no user directories under %s" % server.old, "run the deploy again")
    assert not server.log.exists()          # mailstore did not run


def test_no_user_directories_and_a_failing_quiesce_resume(server):
    result = server.migrate(env={"FAIL_SYSTEMCTL": "stop"})
    assert result.returncode == 1
    server.assert_serving()


def test_missing_new_root_changes_nothing(server):
    server.add_user("alice")
    server.new.rmdir()
    result = server.migrate()
    assert result.returncode == 1
    assert "no such directory" in result.stderr and "nothing changed" in result.stderr
    assert server.calls() == []
    server.assert_serving()
    assert (server.old / "alice" / "Maildir" / "cur").is_dir()


def test_resume_opens_the_smtp_listeners_a_stopped_container_closed(server):
    # operations/handover.py closes them before a cut-over or rollback stops a container.
    (server.state / "master_service_disable").write_text("inet\n")
    assert server.run("mail-resume").returncode == 0
    assert (server.state / "master_service_disable").read_text().strip() == ""


def test_usage_error_changes_nothing(server):
    result = server.run("mail-migrate", server.old)
    assert result.returncode == 2 and "usage" in result.stderr
    assert server.calls() == []

