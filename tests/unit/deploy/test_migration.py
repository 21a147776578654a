"""operations/migration.py against fake hosts: the mail moves only while the old root holds
users not yet cut over; Dovecot is never pointed at a root the mail was not moved to."""
import json

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations.secrets import InventoryError
from operations import migration

MOVE = {"mail_root": "/srv/mail", "mail_root_previous": "/home/mailboxes"}


def _state(users, done=(), deferred="", held=False):
    return {"users": sorted(users), "done": sorted(done), "deferred": deferred, "held": held}


def _commands(ops):
    return [c for op in ops for c in op.commands]


def test_fact_reads_users_journal_and_deferral():
    journal = [json.dumps({"event": "claim", "user": "alice"}),
               json.dumps({"event": "done", "user": "alice", "mode": "copy"}),
               '{"event": "done", "us',                       # torn by kill -9
               json.dumps({"event": "claim", "user": "bob"})]
    output = ["# users", "bob", "alice", "# journal", *journal, "# deferred", "local lmtp",
              "# held", "yes"]
    assert migration.MailMigration().process(output) == \
        {"users": ["alice", "bob"], "done": ["alice"], "deferred": "local lmtp", "held": True}
    assert migration.MailMigration().process(output[:-2])["held"] is False
    command = migration.MailMigration().command("/home/mailboxes", "/srv/mail")
    assert "! -name 'lost+found'" in command and "/srv/mail/.mailstore-migrate/journal.jsonl" \
        in command
    assert "[ -e '/var/lib/mailstore/delivery-held' ] && echo yes" in command


def test_dovecot_root_fact_parses_the_userdb_query():
    fact = migration.DovecotMailRoot()
    assert fact.process(["CONCAT('/home/mailboxes/', mailbox) AS home"]) == "/home/mailboxes"
    assert fact.process([]) is None


def test_same_root_installs_the_scripts_and_moves_nothing():
    ops = run(migration.move_mail, facts={"DovecotMailRoot": "/home/mailboxes"})
    assert {op.name for op in ops} == {
        f"Move mail to the data volume | {name} ({purpose})"
        for name, purpose in migration.SCRIPTS.items()}
    assert run(migration.resume_delivery) == []


def test_pending_users_are_moved_then_delivery_resumed():
    facts = {"DovecotMailRoot": "/home/mailboxes",
             "MailMigration": _state(["alice", "bob"], done=["alice"])}
    commands = _commands(run(migration.move_mail, facts=facts, data=MOVE))
    assert "/usr/local/sbin/mail-migrate '/home/mailboxes' '/srv/mail'" in commands
    assert _commands(run(migration.resume_delivery, facts=facts, data=MOVE)) == \
        ["/usr/local/sbin/mail-resume"]


def test_second_run_after_the_move_changes_nothing():
    facts = {"DovecotMailRoot": "/srv/mail",
             "MailMigration": _state(["alice", "bob"], done=["alice", "bob"])}
    assert not [c for c in _commands(run(migration.move_mail, facts=facts, data=MOVE))
                if c.startswith("/usr/local/sbin/mail-migrate")]
    assert run(migration.resume_delivery, facts=facts, data=MOVE) == []


def test_delivery_left_deferred_by_an_interrupted_run_is_resumed():
    facts = {"DovecotMailRoot": "/home/mailboxes",
             "MailMigration": _state(["alice"], done=["alice"], deferred="local lmtp")}
    assert _commands(run(migration.resume_delivery, facts=facts, data=MOVE)) == \
        ["/usr/local/sbin/mail-resume"]


def test_a_hold_left_by_a_failed_resume_is_resumed():
    # mail-resume lifted the deferral, then failed (postqueue -f): the held file stays
    facts = {"DovecotMailRoot": "/srv/mail",
             "MailMigration": _state(["alice"], done=["alice"], held=True)}
    assert _commands(run(migration.resume_delivery, facts=facts, data=MOVE)) == \
        ["/usr/local/sbin/mail-resume"]


def test_dovecot_on_a_root_the_inventory_does_not_name_is_refused():
    # mail moved to /srv/mail, then mail_root set back without asking for a move
    with pytest.raises(InventoryError, match="mail_root_previous = '/srv/mail'"):
        run(migration.move_mail, facts={"DovecotMailRoot": "/srv/mail"})


@pytest.mark.parametrize("data, error", [
    ({"mail_root_previous": "/srv/mail/old"}, "overlap"),
    ({"mail_root_previous": "relative"}, "absolute"),
    ({"mail_root_previous": "/srv/../home"}, "absolute"),
])
def test_bad_roots_are_refused(data, error):
    with pytest.raises(InventoryError, match=error):
        migration.roots({**MOVE, **data})


def test_scripts_are_valid_shell_and_python():
    import ast
    import subprocess
    for name in ("mail-quiesce", "mail-resume"):
        subprocess.run(["sh", "-n", f"{fake_host.REPO}/files/migration/{name}"], check=True)
    ast.parse((fake_host.REPO / "files/migration/mail-migrate").read_text())


def test_deploy_frames_the_dovecot_switch_with_the_move_and_the_resume():
    """deploy.py: the move before dovecot.server(), the resume right after it. Should
    dovecot.server() fail, pyinfra runs nothing more on the host: the hold mail-migrate left
    (its held file: CRITICAL) stays until the next deploy resumes it
    (test_migration_scripts.py shows both halves)."""
    import ast
    tree = ast.parse((fake_host.REPO / "deploy.py").read_text())
    calls = [ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    steps = [c for c in calls if c in ("migration.move_mail", "dovecot.server",
                                       "migration.resume_delivery")]
    assert steps == ["migration.move_mail", "dovecot.server", "migration.resume_delivery"]
