"""Maildir model: what is under ``ROOT/<user>/`` as plain data, from directory listings only.

Scanning never opens a message, never follows a symbolic link and never writes; whatever is
not mail, a Dovecot file or an ordinary file of the user's home is an :class:`Anomaly`.

API (plain named tuples, so planners built on it are pure functions)::

    check_user_name(name) -> name            # raises InvalidUserName
    list_users(root) -> (names, anomalies)   # direct children of ROOT that are user dirs
    scan_user(root, user) -> UserTree        # raises MaildirError if ROOT/<user> is unusable
    rescan_user(root, user, previous, force=()) -> UserTree   # same, reusing an earlier scan
    iter_users(root) -> UserTree, ...        # every user of list_users, scanned
    parse_name(name) -> (unique, info, size_field, vsize_field)
    folder_display(folder) -> "INBOX" / "Sent" / "A.B";  folder_from_display(name) -> folder

The face of the package: callers import from here only. Inside, arrows point down:

- :mod:`~mailstore.maildir.scan`: the scanner (scan_user, rescan_user, scan_user_skeleton,
  list_users, iter_users);
- :mod:`~mailstore.maildir.model`: what a scan finds (:class:`UserTree` and what each of its
  lists holds: :class:`Message`, :class:`Entry`, :class:`Anomaly`);
- :mod:`~mailstore.maildir.layout`: names and layout rules (``Maildir``, new/cur/tmp, Dovecot's
  control and index files, Maildir file names, Maildir++ folder names, safe user names);
- :mod:`~mailstore.maildir.errors`: :class:`MaildirError`, :class:`InvalidUserName`.

``_entry`` (an Entry from an lstat result) and ``_type_name`` (the words for a file that is
not mail) are shared with the migration's cut-over scan, which builds the same lists.
"""
from mailstore.maildir.errors import InvalidUserName, MaildirError
from mailstore.maildir.layout import (CONTROL_NAMES, CONTROL_PREFIXES, INDEX_PREFIXES,
                                      LOST_AND_FOUND, MAILDIR, MESSAGE_SUBDIRS, SUBDIRS, TMP,
                                      check_user_name, classify_dovecot_file, folder_display,
                                      folder_from_display, message_relpath, parse_name,
                                      user_path)
from mailstore.maildir.model import Anomaly, Entry, Message, UserTree, index_messages
from mailstore.maildir.scan import (_entry, _type_name, iter_users, list_users, rescan_user,
                                    scan_user, scan_user_skeleton)

__all__ = ["Anomaly", "CONTROL_NAMES", "CONTROL_PREFIXES", "Entry", "INDEX_PREFIXES",
           "InvalidUserName", "LOST_AND_FOUND", "MAILDIR", "MESSAGE_SUBDIRS", "MaildirError",
           "Message", "SUBDIRS", "TMP", "UserTree", "check_user_name", "classify_dovecot_file",
           "folder_display", "folder_from_display", "index_messages", "iter_users", "list_users",
           "message_relpath", "parse_name", "rescan_user", "scan_user", "scan_user_skeleton",
           "user_path"]
