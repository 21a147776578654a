"""operations/staging.files against a fake host, in the style of pyinfra's operation tests:
given the remote facts, exactly which commands would run, in which order."""
import hashlib

import pytest
from pyinfra.api import FileUploadCommand, StringCommand
from pyinfra.context import ctx_host, ctx_state

from operations import staging


class FakeHost:
    """Answers File and Sha1File facts from `remote` ({path: (content, mode, user, group)})."""

    in_op = True
    in_callback_op = False
    current_op_global_arguments = None

    def __init__(self, remote):
        self.remote = remote
        self.noop_description = None

    def get_fact(self, cls, path):
        entry = self.remote.get(path)
        if entry is None:
            return None
        content, mode, user, group = entry
        if cls.__name__ == "FileContents":
            return content.splitlines()
        if cls.__name__ == "File":
            return {"mode": mode, "user": user, "group": group, "size": len(content)}
        assert cls.__name__ == "Sha1File"
        return hashlib.sha1(content.encode()).hexdigest()

    def get_temp_filename(self, key=None, **kwargs):
        return "_tempfile_"

    def noop(self, description):
        self.noop_description = description

    def log(self, message, log_func):
        log_func(message)


class FakeState:
    def __init__(self, diff=False):
        self.config = type("Config", (), {"DIFF": diff})()


def commands(remote, config_files, check="validate {stage}", diff=False):
    """The commands staging.files would run, uploads shown as ("upload", content, dest)."""
    host = FakeHost(remote)
    with ctx_state.use(FakeState(diff)), ctx_host.use(host):
        raw = list(staging.files._inner(config_files=config_files, stage="/stage", check=check))
    out = []
    for command in raw:
        if isinstance(command, FileUploadCommand):
            out.append(("upload", command.src.read(), command.dest))
        elif isinstance(command, StringCommand):
            out.append(command.get_raw_value())
        else:
            out.append(command)
    return out, host


MAIN = staging.ConfigFile("/etc/postfix/main.cf", "new main\n")
MAP = staging.ConfigFile("/etc/postfix/transport", "x smtp:[y]\n",
                         then="postmap /etc/postfix/transport",
                         product="/etc/postfix/transport.db")
SECRET = staging.ConfigFile("/etc/postfix/mysql.cf", "password = s\n", mode="640",
                            group="postfix")


def test_fresh_host_stages_everything_checks_then_installs():
    out, _ = commands({}, [MAIN, MAP])
    assert out == [
        "rm -rf /stage && install -d -m 700 /stage",
        ("upload", "new main\n", "/stage/main.cf"),
        "chmod 600 /stage/main.cf",
        ("upload", "x smtp:[y]\n", "/stage/transport"),
        "chmod 600 /stage/transport",
        "validate /stage",
        "install -D -o root -g root -m 644 /stage/main.cf /etc/postfix/main.cf.new && "
        "mv -f /etc/postfix/main.cf.new /etc/postfix/main.cf",
        "install -D -o root -g root -m 644 /stage/transport /etc/postfix/transport.new && "
        "mv -f /etc/postfix/transport.new /etc/postfix/transport",
        "postmap /etc/postfix/transport",
    ]


def test_up_to_date_host_gets_no_command():
    remote = {"/etc/postfix/main.cf": ("new main\n", 644, "root", "root"),
              "/etc/postfix/transport": ("x smtp:[y]\n", 644, "root", "root"),
              "/etc/postfix/transport.db": ("db", 644, "root", "root")}
    out, host = commands(remote, [MAIN, MAP])
    assert out == [] and host.noop_description == "2 file(s) up to date"


def test_one_changed_file_stages_the_whole_set_but_replaces_only_it():
    remote = {"/etc/postfix/main.cf": ("old main\n", 644, "root", "root"),
              "/etc/postfix/transport": ("x smtp:[y]\n", 644, "root", "root"),
              "/etc/postfix/transport.db": ("db", 644, "root", "root")}
    out, _ = commands(remote, [MAIN, MAP])
    uploads = [c[2] for c in out if isinstance(c, tuple)]
    assert uploads == ["/stage/main.cf", "/stage/transport"]    # the check sees the whole set
    installs = [c for c in out if isinstance(c, str) and c.startswith("install -D")]
    assert len(installs) == 1 and "/etc/postfix/main.cf.new" in installs[0]
    assert "postmap /etc/postfix/transport" not in out           # its map did not change


def test_check_comes_before_any_live_file_is_touched():
    out, _ = commands({}, [MAIN, SECRET])
    check = out.index("validate /stage")
    touching = [i for i, c in enumerate(out) if isinstance(c, str) and "/etc/" in c]
    assert touching and min(touching) > check


def test_missing_map_database_reruns_postmap_only():
    remote = {"/etc/postfix/transport": ("x smtp:[y]\n", 644, "root", "root")}
    out, _ = commands(remote, [MAP])
    assert out == ["postmap /etc/postfix/transport"]


def test_wrong_owner_or_mode_is_fixed_without_restaging():
    remote = {"/etc/postfix/mysql.cf": ("password = s\n", 644, "root", "root")}
    out, _ = commands(remote, [SECRET])
    assert out == ["chown root:postfix /etc/postfix/mysql.cf && chmod 640 /etc/postfix/mysql.cf"]


def test_paths_are_quoted():
    odd = staging.ConfigFile("/etc/x y/z.conf", "a\n")
    out, _ = commands({}, [odd], check=None)
    assert out[-1] == ("install -D -o root -g root -m 644 /stage/z.conf '/etc/x y/z.conf.new' "
                       "&& mv -f '/etc/x y/z.conf.new' '/etc/x y/z.conf'")


def test_file_names_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        commands({}, [MAIN, MAIN._replace(dest="/etc/other/main.cf")])


def test_diff_shows_public_changes_but_never_a_secret(caplog):
    remote = {"/etc/postfix/main.cf": ("old main\n", 644, "root", "root"),
              "/etc/postfix/mysql.cf": ("password = old\n", 640, "root", "postfix")}
    with caplog.at_level("INFO", logger="pyinfra"):
        commands(remote, [MAIN, SECRET], diff=True)
    assert "Will replace /etc/postfix/main.cf" in caplog.text
    assert "old main" in caplog.text and "new main" in caplog.text
    assert "Will replace /etc/postfix/mysql.cf" in caplog.text
    assert "password" not in caplog.text
