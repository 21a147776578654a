"""The API user's credentials, read from a file (never from the command line, where ``ps``
and pyinfra's logs would show them)."""
import json
import os
import stat

from mailstore.icinga.errors import IcingaError


def read_credentials(path):
    """(user, password) from a file holding ``user:password`` or JSON ``{"username",
    "password"}``. Refused if others may read it (it is a password)."""
    try:
        st = os.stat(path)
        with open(path, "r", encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as e:
        raise IcingaError("cannot read credentials file %s: %s" % (path, e.strerror))
    if st.st_mode & stat.S_IROTH:
        raise IcingaError("credentials file %s is readable by others (mode %04o); "
                          "chmod o-r it" % (path, stat.S_IMODE(st.st_mode)))
    if text.startswith("{"):
        try:
            data = json.loads(text)
            user, password = data["username"], data["password"]
        except (ValueError, KeyError, TypeError):
            raise IcingaError("credentials file %s: JSON must be {\"username\": ..., "
                              "\"password\": ...}" % path)
    else:
        user, sep, password = text.partition(":")
        if not sep:
            raise IcingaError("credentials file %s: expected user:password" % path)
    if not user or not password:
        raise IcingaError("credentials file %s: empty user or password" % path)
    return str(user), str(password)
