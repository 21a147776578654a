"""The SMTP drain a cut-over and a rollback run in a container before they stop it
(operations/handover.py SMTP_DRAIN), on the lab's running container: a new connection to port
25 is refused at once, while a session that was open before goes on, its mail is accepted
(250) and delivered, and the drain returns as soon as that session has ended. Then the drain's
nftables table is removed again, as the container's shutdown would drop it, and port 25
accepts connections.

This is what lets the cut-over stop a container while mail arrives without one message
arriving twice: a drain that ended the open sessions (closing Postfix's listeners with a
reload does) would cut a session between its final dot and the 250, and the sender would
send the mail again.
"""
import sys
import threading
import time
from pathlib import Path

from mailclients import message, smtp_25, wait_for_delivery

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import lock  # noqa: E402
from operations import handover  # noqa: E402


def _drain_in_background(ssh):
    """Run the drain in the container: the thread, and {'result': its CompletedProcess}."""
    done = {}

    def run():
        done["result"] = ssh(handover.SMTP_DRAIN, check=False)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def _drain_table_present(ssh):
    return ssh(f"nft list table inet {handover.SMTP_DRAIN_TABLE}", check=False).returncode == 0


def test_the_drain_refuses_new_sessions_and_lets_an_open_one_deliver(lab, ssh):
    alice = lab["accounts"][0]
    with lock.held():
        session = smtp_25(lab)
        thread, done = _drain_in_background(ssh)
        try:
            # the drain's table is in place once the new connection is refused
            deadline = time.monotonic() + 30
            refused = None
            while time.monotonic() < deadline and refused is None:
                try:
                    smtp_25(lab, starttls=False).close()
                except OSError as exc:
                    refused = exc
                else:
                    time.sleep(0.2)
            assert refused is not None, "port 25 still took new connections during the drain"
            assert isinstance(refused, ConnectionRefusedError), repr(refused)
            assert thread.is_alive(), "the drain ended while an SMTP session was still open"

            marker, msg = message("tests@example.org", alice["email"], "drain")
            refusals = session.send_message(msg)
            assert refusals == {}
            session.quit()
            thread.join(timeout=60)
            assert not thread.is_alive(), "the drain did not end after the last session"
            assert done["result"].returncode == 0, done["result"].stderr
            # it ended because the session did, not at its 30 s bound
            assert "still open" not in done["result"].stderr
        finally:
            thread.join(timeout=60)
            ssh(f"nft delete table inet {handover.SMTP_DRAIN_TABLE}", check=False)
        assert not _drain_table_present(ssh)
        smtp_25(lab).quit()
        wait_for_delivery(ssh, lab, alice["user"], marker)

