"""Moving the mail to another root (production: /home/mailboxes -> the data volume), live.

The operator sets `mail_root` to the new root (keeping `mail_root_previous` at the old one) and
runs the normal deploy. In deploy.py this module's two steps frame dovecot.server():

    migration.move_mail()       # mail-migrate OLD NEW, only while OLD holds users not yet
                                #   cut over (the journal in NEW says which are)
    dovecot.server()            # renders mail_root=NEW; starts the Dovecot the cut-over stopped
    migration.resume_delivery() # mail-resume: delivery back on, the queue flushed

What runs on the server (files/migration/, installed to /usr/local/sbin):
- mail-quiesce: Postfix defers `local lmtp` (mail waits in the queue), Dovecot stops.
- mail-migrate OLD NEW: `mailstore migrate OLD NEW --quiesce mail-quiesce`; on success it
  leaves delivery deferred and Dovecot stopped, so nothing touches OLD between the final copy
  and Dovecot's switch to NEW; when no user was cut over it resumes on OLD and fails, which
  stops the deploy before Dovecot is switched.
- mail-resume: Dovecot started, defer removed, `postqueue -f`.
While delivery is held, HELD_FILE says why in one line and the monitoring is CRITICAL (the
mailq check's --held): a move that stops half-way, or a dovecot.server() that fails after a
complete move (then resume_delivery never runs), never defers the mail silently. The next
deploy finishes either: it moves the users not cut over yet, switches Dovecot, resumes.

A second run changes nothing: every user of OLD is then recorded as done in NEW's journal.
"""
import json
import posixpath

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import files, server

from operations.secrets import InventoryError

SBIN = "/usr/local/sbin"
SCRIPTS = {
    "mail-quiesce": "defer delivery, stop Dovecot (hook of mailstore migrate)",
    "mail-resume": "start Dovecot, resume delivery, flush the queue",
    "mail-migrate": "mailstore migrate with the hooks, for the deploy",
}
# Present while the scripts hold delivery on purpose (mail-quiesce writes it, mail-resume
# removes it, mail-migrate puts in the one line that says what to do next); the mailq check
# (operations/monitoring.py) is CRITICAL while it exists. The scripts' default, kept equal.
HELD_FILE = "/var/lib/mailstore/delivery-held"
# Where `mailstore migrate` keeps its journal in the target root (mailstore/migrate/journal.py).
JOURNAL = ".mailstore-migrate/journal.jsonl"
# Not user directories: ext4 puts lost+found at the root of the data volume.
NOT_USERS = ("lost+found",)


class MailMigration(FactBase):
    """The state of a move from `old` to `new`: {"users": user directories under old,
    "done": users the journal in new records as migrated, "deferred": Postfix's
    defer_transports (non-empty while a cut-over holds delivery), "held": HELD_FILE exists}."""

    def command(self, old, new):
        skip = " ".join(f"! -name '{n}'" for n in NOT_USERS)
        return (f"echo '# users'; [ -d '{old}' ] && find '{old}' -mindepth 1 -maxdepth 1 "
                f"-type d ! -name '.*' {skip} -printf '%f\\n'; "
                f"echo '# journal'; cat '{new}/{JOURNAL}' 2>/dev/null; "
                f"echo '# deferred'; postconf -h defer_transports 2>/dev/null; "
                f"echo '# held'; [ -e '{HELD_FILE}' ] && echo yes; true")

    def process(self, output):
        section, state = None, {"users": [], "done": [], "deferred": "", "held": False}
        for line in output:
            if line.startswith("# "):
                section = line[2:]
            elif section == "users":
                state["users"].append(line)
            elif section == "journal":
                try:
                    event = json.loads(line)
                except ValueError:
                    continue            # a line torn by a killed run
                if isinstance(event, dict) and event.get("event") == "done":
                    state["done"].append(event.get("user"))
            elif section == "deferred":
                state["deferred"] += line.strip()
            elif section == "held":
                state["held"] = state["held"] or line.strip() == "yes"
        state["users"].sort()
        state["done"] = sorted(set(state["done"]))
        return state


class DovecotMailRoot(FactBase):
    """The mail root Dovecot's userdb gives homes under now (the `CONCAT('<root>/', mailbox)`
    of files/dovecot/*/dovecot-sql.conf.ext.j2), or None (no Dovecot of this deploy yet)."""

    def command(self):
        return ("grep -ho \"CONCAT('/[^']*/', mailbox) AS home\" "
                "/etc/dovecot/dovecot-sql.conf.ext 2>/dev/null; true")

    def process(self, output):
        for line in output:
            if line.startswith("CONCAT('"):
                return posixpath.normpath(line[len("CONCAT('"):].split("'", 1)[0])
        return None


def _root(data, key):
    root = data[key]
    if not isinstance(root, str) or not root.startswith("/") or ".." in root.split("/") \
            or "'" in root:
        raise InventoryError(f"{key}={root!r}: must be an absolute path without '..'")
    return posixpath.normpath(root)


def roots(data):
    """(old, new) when the mail is to move from `mail_root_previous` to `mail_root`, else None."""
    old, new = _root(data, "mail_root_previous"), _root(data, "mail_root")
    if old == new:
        return None
    if old.startswith(new + "/") or new.startswith(old + "/"):
        raise InventoryError(f"mail_root={new} and mail_root_previous={old} overlap: "
                             f"one cannot be moved into the other")
    return old, new


def pending(state):
    """Users under the old root that are not cut over yet."""
    return sorted(set(state["users"]) - set(state["done"]))


def check_dovecot_root(current, data):
    """Refuse to point Dovecot at a root the mail was never moved to: Dovecot reads
    `current` now, and the inventory names neither it as the old root nor as the new one
    (e.g. mail_root was set back after a move; the mail would seem to vanish)."""
    old, new = _root(data, "mail_root_previous"), _root(data, "mail_root")
    if current is None or current in (old, new):
        return
    raise InventoryError(
        f"Dovecot reads the mail under {current}, but mail_root={new} and mail_root_previous="
        f"{old}: set mail_root = {current!r} to keep it there, or mail_root_previous = "
        f"{current!r} to move it to {new} (README: Moving mail to the data volume)")


@deploy("Move mail to the data volume")
def move_mail():
    for name, purpose in SCRIPTS.items():
        files.put(name=f"{name} ({purpose})", src=f"files/migration/{name}",
                  dest=f"{SBIN}/{name}", mode="755")
    data = host.data.dict()
    moving = roots(data)
    check_dovecot_root(host.get_fact(DovecotMailRoot), data)
    if moving is None:
        return
    old, new = moving
    todo = pending(host.get_fact(MailMigration, old=old, new=new))
    if todo:
        server.shell(name=f"Move the mail of {len(todo)} users from {old} to {new} "
                          f"(delivery deferred during the cut-over)",
                     commands=[f"{SBIN}/mail-migrate '{old}' '{new}'"])


@deploy("Resume mail delivery after the move")
def resume_delivery():
    """After dovecot.server(): once Dovecot reads the new root, let the waiting mail in.
    Also finishes a run that stopped between the cut-over and this step, or whose
    mail-resume failed half-way (the held file, and the CRITICAL, would stay)."""
    moving = roots(host.data.dict())
    if moving is None:
        return
    state = host.get_fact(MailMigration, old=moving[0], new=moving[1])
    if pending(state) or state["deferred"] or state.get("held"):
        server.shell(name="Resume delivery (Dovecot reads the new root now)",
                     commands=[f"{SBIN}/mail-resume"])
