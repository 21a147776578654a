"""The `mailstore backup` command line: contract (docs/architecture.md), exit codes, cron-friendly
output."""
import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from mailstore.cli import main
from mailstore.cli.backup import backup_group

from tests.harness import make_tree, message_paths, snapshot_tree


def cli(*args, env=None):
    """Run the real command in a subprocess (stdout/stderr not a tty, as under cron); `env`:
    variables to set (None as a value: unset)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MAILSTORE_REPOSITORY", "MAILSTORE_KEY_FILE")}
    for k, v in (env or {}).items():
        if v is None:
            environ.pop(k, None)
        else:
            environ[k] = str(v)
    proc = subprocess.run([sys.executable, "-m", "mailstore", "backup"] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
                          env=environ)
    return proc


def test_every_subcommand_accepts_key_file_and_has_help():
    for name, command in backup_group.commands.items():
        options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
        assert "--key-file" in options, name
    runner = CliRunner()
    for name in backup_group.commands:
        result = runner.invoke(main, ["backup", name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_json_where_a_machine_reads():
    for name in ("run", "list", "verify", "restore", "prune", "find", "status"):
        options = {o for p in backup_group.commands[name].params for o in p.opts}
        assert "--json" in options, name


def test_cli_round_trip_with_a_key(tmp_path):
    key, repo, src = tmp_path / "key", tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    r = cli("init", repo, "--key-file", key, "--new-key")
    assert r.returncode == 0 and "aes-256-gcm" in r.stdout
    r = cli("run", repo, src, "--key-file", key)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""                    # quiet under cron: nothing on stderr
    assert len(r.stdout.strip().splitlines()) == 1
    snapshot_id = r.stdout.split()[-1]       # the contract: the id is the last word
    listed = json.loads(cli("list", repo, "--json").stdout)
    assert [s["id"] for s in listed] == [snapshot_id]
    assert cli("verify", repo, "--read-data", "--key-file", key).returncode == 0
    r = cli("restore", repo, snapshot_id, tmp_path / "dst", "--key-file", key)
    assert r.returncode == 0, r.stderr
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
    r = cli("restore", repo, "latest", tmp_path / "dst2", "--user", "bob", "--folder", "Trash",
            "--key-file", key)
    assert r.returncode == 0 and len(message_paths(tmp_path / "dst2")) == 1
    st = json.loads(cli("status", repo, "--json").stdout)
    assert st["snapshots"] == 1 and st["last_snapshot_id"] == snapshot_id
    assert st["last_verify"]["ok"] is True


def test_cli_errors_are_one_clear_line_and_exit_non_zero(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    cli("init", repo, "--key-file", tmp_path / "key", "--new-key")
    r = cli("run", repo, src)
    assert r.returncode == 1
    assert r.stderr.strip() == ("mailstore backup: error: repository {} is encrypted: give its "
                                "key with --key-file (or MAILSTORE_KEY_FILE)".format(repo))
    cli("init", tmp_path / "other", "--key-file", tmp_path / "key2", "--new-key")
    r = cli("restore", repo, "latest", tmp_path / "dst", "--key-file", tmp_path / "key2")
    assert r.returncode == 1 and "wrong key" in r.stderr and "Traceback" not in r.stderr
    r = cli("list", tmp_path / "nothing")
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = cli("restore", repo, "no-such-snapshot", tmp_path / "dst", "--key-file",
            tmp_path / "key")
    assert r.returncode == 1 and "no snapshot no-such-snapshot" in r.stderr


def test_run_with_skipped_files_completes_but_exits_1(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    os.symlink("/etc/passwd", src / "alice/Maildir/cur/1800000000.M1P1.evil:2,S")
    cli("init", repo)
    r = cli("run", repo, src)
    assert r.returncode == 1
    assert "warning: alice/Maildir/cur/1800000000.M1P1.evil:2,S: symlink" in r.stderr
    assert r.stdout.split()[-1] == json.loads(cli("list", repo, "--json").stdout)[0]["id"]


def test_find_prints_ids_that_restore_message_takes(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    cli("init", repo)
    cli("run", repo, src)
    r = cli("find", repo, "--user", "alice", "--folder", "Sent", "--subject", "réunion sent 2")
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    snapshot, user, folder, message = lines[0].split("\t")[:4]
    assert (user, folder) == ("alice", "Sent")
    r = cli("restore", repo, snapshot, tmp_path / "one", "--user", user, "--message", message)
    assert r.returncode == 0, r.stderr
    restored = message_paths(tmp_path / "one")
    assert len(restored) == 1 and os.path.basename(restored[0]).startswith(message)
    # the fixture's Date headers are 1..6 Nov 2026; the 5th and 6th are alice's INBOX 4 and 5
    found = json.loads(cli("find", repo, "--since", "2026-11-05", "--json").stdout)
    assert sorted((f["user"], f["folder"]) for f in found) == [("alice", "INBOX")] * 2
    assert all(f["date"] >= 1793836800 - 14 * 3600 for f in found)


def test_prune_dry_run_lists_decisions(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    cli("init", repo)
    cli("run", repo, src)
    cli("run", repo, src)
    r = cli("prune", repo, "--keep-daily", "1", "--keep-weekly", "0", "--keep-monthly", "0",
            "--dry-run")
    assert r.returncode == 0
    assert r.stdout.count("keep    ") == 1 and r.stdout.count("remove  ") == 1
    assert len(json.loads(cli("list", repo, "--json").stdout)) == 2
    r = cli("prune", repo, "--keep-daily", "1", "--keep-weekly", "0", "--keep-monthly", "0",
            "--json")
    assert len(json.loads(r.stdout)["remove"]) == 1
    assert len(json.loads(cli("list", repo, "--json").stdout)) == 1


def test_full_scan_option_records_an_in_place_chmod(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    assert cli("init", repo).returncode == 0
    assert json.loads(cli("run", repo, src, "--json").stdout)["scan"] == "full"
    path = sorted(message_paths(src))[0]
    os.chmod(str(path), 0o604)                      # changed in place: no rename, no new name
    second = json.loads(cli("run", repo, src, "--json").stdout)
    assert second["scan"] == "incremental"
    third = json.loads(cli("run", repo, src, "--full-scan", "--json").stdout)
    assert third["scan"] == "full"
    r = cli("restore", repo, "latest", tmp_path / "dst")
    assert r.returncode == 0, r.stderr
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


def test_every_command_names_the_repository_and_key_the_same_ways(tmp_path):
    """REPO, -r/--repo or MAILSTORE_REPOSITORY; --key-file or MAILSTORE_KEY_FILE."""
    for name, command in backup_group.commands.items():
        options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
        assert {"-r", "--repo", "--key-file"} <= options, name
    key, repo, src = tmp_path / "key", tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    assert cli("init", "-r", repo, "--key-file", key, "--new-key").returncode == 0
    env = {"MAILSTORE_REPOSITORY": repo, "MAILSTORE_KEY_FILE": key}
    r = cli("run", "--repo", repo, src, "--key-file", key)
    assert r.returncode == 0, r.stderr
    first = r.stdout.split()[-1]
    r = cli("run", src, env=env)                     # SOURCE_ROOT alone
    assert r.returncode == 0, r.stderr
    second = r.stdout.split()[-1]
    r = cli("list", "--json", env=env)
    assert [s["id"] for s in json.loads(r.stdout)] == [first, second]
    assert cli("verify", env=env).returncode == 0
    assert cli("status", "-r", repo, env={"MAILSTORE_KEY_FILE": key}).returncode == 0
    r = cli("restore", first, tmp_path / "dst", env=env)     # SNAPSHOT TARGET_ROOT alone
    assert r.returncode == 0, r.stderr
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
    r = cli("restore", "-r", repo, "latest", tmp_path / "dst2", env={"MAILSTORE_KEY_FILE": key})
    assert r.returncode == 0, r.stderr
    # REPO given as argument wins over the environment
    cli("init", tmp_path / "plain")
    r = cli("list", tmp_path / "plain", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = cli("find", "--limit", "1", env=env)
    assert r.returncode == 0 and r.stdout.count("\t") == 6
    r = cli("prune", "--keep-daily", "1", "--keep-weekly", "0", "--keep-monthly", "0",
            "--dry-run", env=env)
    assert r.returncode == 0, r.stderr


def test_repository_given_twice_differently_or_not_at_all_is_a_usage_error(tmp_path):
    repo = tmp_path / "repo"
    cli("init", repo)
    r = cli("list", repo, "-r", tmp_path / "other")
    assert r.returncode == 2 and "given twice" in r.stderr
    assert cli("list", repo, "-r", str(repo) + "/").returncode == 0     # the same one
    r = cli("run", tmp_path, "-r", repo, tmp_path / "src")
    assert r.returncode == 2 and "given twice" in r.stderr
    r = cli("list")
    assert r.returncode == 2 and "MAILSTORE_REPOSITORY" in r.stderr
    r = cli("run", tmp_path / "src")
    assert r.returncode == 2 and "MAILSTORE_REPOSITORY" in r.stderr
    r = cli("restore", "-r", repo, "a", "b", "c", "d")
    assert r.returncode == 2 and "too many arguments" in r.stderr


def test_prune_takes_any_of_the_keep_options_and_refuses_none(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    cli("init", repo)
    for _ in range(3):
        cli("run", repo, src)
    leftover = repo / "tmp" / "left-by-a-crash.pack"
    leftover.write_bytes(b"x")
    r = cli("prune", repo)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "refusing to prune" in r.stderr
    assert len(json.loads(cli("list", repo, "--json").stdout)) == 3
    assert leftover.exists()                      # nothing at all was deleted
    r = cli("prune", repo, "--keep-weekly", "2", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("keep    ") == 1 and r.stdout.count("remove  ") == 2
    r = cli("prune", repo, "--keep-last", "2", "--keep-monthly", "1")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(cli("list", repo, "--json").stdout)) == 2
    r = cli("prune", repo, "--keep-daily", "1")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(cli("list", repo, "--json").stdout)) == 1


def test_restore_dry_run_lists_what_it_would_restore_and_writes_nothing(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    cli("init", repo)
    cli("run", repo, src)
    messages = sorted(message_paths(src))
    source_before = snapshot_tree(src)
    r = cli("restore", repo, "latest", tmp_path / "new", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "new").exists()              # not even the target root
    listed = [line.split("  ", 1)[1] for line in r.stdout.splitlines()
              if line.startswith("restore  ")]
    assert sorted(os.path.relpath(p, str(tmp_path / "new")) for p in listed
                  if "/Maildir/" in p and os.path.basename(os.path.dirname(p)) in ("cur", "new")) \
        == sorted(os.path.relpath(str(p), str(src)) for p in messages)
    assert "dry run: would restore {} messages".format(len(messages)) in r.stdout.splitlines()[-1]
    # an existing, empty target stays untouched, metadata included
    (tmp_path / "empty").mkdir()
    before = os.stat(str(tmp_path / "empty"))
    r = cli("restore", repo, "latest", tmp_path / "empty", "--dry-run", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["messages"] == len(messages)
    assert os.listdir(str(tmp_path / "empty")) == []
    assert os.stat(str(tmp_path / "empty")).st_mtime_ns == before.st_mtime_ns
    # --merge into what is there: nothing would be added; a conflict is reported as for real
    r = cli("restore", repo, "latest", src, "--merge", "--dry-run", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["messages"] == 0
    assert json.loads(r.stdout)["present"] == len(messages)
    r = cli("restore", repo, "latest", src, "--dry-run")
    assert r.returncode == 1 and "already holds messages" in r.stderr
    assert snapshot_tree(src) == source_before


def test_quiet_leaves_only_the_snapshot_id_and_errors(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    cli("init", repo)
    r = cli("run", repo, src, "--quiet")
    assert r.returncode == 0 and r.stderr == ""
    snapshot_id = r.stdout.strip()
    assert r.stdout == snapshot_id + "\n"
    assert [s["id"] for s in json.loads(cli("list", repo, "--json").stdout)] == [snapshot_id]
    r = cli("run", repo, src)                          # without: a summary, the id last
    assert r.stdout.split()[-1] != snapshot_id and len(r.stdout.splitlines()) == 1
    for args in (("verify", repo, "-q"), ("verify", repo, "--read-data", "--quiet"),
                 ("restore", repo, "latest", tmp_path / "dst", "-q"),
                 ("restore", repo, "latest", tmp_path / "dry", "--dry-run", "-q"),
                 ("prune", repo, "--keep-last", "1", "--dry-run", "-q"),
                 ("prune", repo, "--keep-last", "1", "-q")):
        r = cli(*args)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), args
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
    assert len(json.loads(cli("list", repo, "--json").stdout)) == 1
    # errors are not silenced
    r = cli("restore", repo, "latest", tmp_path / "dst", "-q")
    assert r.returncode == 1 and r.stdout == "" and "already holds messages" in r.stderr


def _one_error_line(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("mailstore backup: error: ")
    return r.stderr


def test_every_error_is_one_line_on_stderr_without_a_traceback(tmp_path):
    repo = tmp_path / "repo"
    cli("init", repo)
    # usage errors: click's own are three lines and more
    assert "SOURCE_ROOT" in _one_error_line(cli("run"), 2)
    assert "nosuch" in _one_error_line(cli("nosuch"), 2)
    assert "--keep-daily" in _one_error_line(cli("prune", repo, "--keep-daily", "x"), 2)
    assert "--bogus" in _one_error_line(cli("list", repo, "--bogus"), 2)
    assert "'soon'" in _one_error_line(cli("find", repo, "--since", "soon"), 2)
    # something the library did not foresee: still one line
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text("[]")
    _one_error_line(cli("list", tmp_path / "odd"), 1)
    # an error of several lines (a database dump's stderr) is joined into one
    r = cli("run", repo, tmp_path, "--mysql-dump", "db", env={"PATH": "/nonexistent"})
    _one_error_line(r, 1)


def test_an_error_text_of_several_lines_is_printed_as_one(monkeypatch):
    from mailstore import backup as lib

    def run(*args, **kwargs):
        raise lib.BackupError("database dump db failed (exit 2): first\nsecond\n")
    monkeypatch.setattr(lib, "run", run)
    result = CliRunner().invoke(main, ["backup", "run", "repo", "src"])
    assert result.exit_code == 1
    assert result.output == ("mailstore backup: error: database dump db failed (exit 2): "
                             "first; second\n")


DAMAGED_CONFIGS = [
    ("a field missing", lambda c: c.pop("encryption"), "field 'encryption' is missing"),
    ("key_check null", lambda c: c.update(key_check=None), "field 'key_check'"),
    ("pack_size not a number", lambda c: c.update(pack_size="big"), "field 'pack_size'"),
    ("a JSON list", lambda c: None, "not a JSON object"),
]


@pytest.mark.parametrize("name,damage,reason", DAMAGED_CONFIGS, ids=[d[0] for d in
                                                                       DAMAGED_CONFIGS])
def test_a_damaged_config_json_is_one_clear_error_line(tmp_path, name, damage, reason):
    repo, key, src = tmp_path / "repo", tmp_path / "key", tmp_path / "src"
    make_tree(src)
    cli("init", repo, "--key-file", key, "--new-key")
    config = json.loads((repo / "config.json").read_text())
    damaged = [config] if name == "a JSON list" else config
    damage(config)
    (repo / "config.json").write_text(json.dumps(damaged))
    for args in (("list", repo), ("status", repo), ("run", repo, src, "--key-file", key),
                 ("verify", repo, "--key-file", key), ("prune", repo, "--keep-last", "1")):
        err = _one_error_line(cli(*args), 1)
        assert "config.json is damaged" in err and reason in err, (args, err)


def test_a_key_file_of_32_raw_bytes_is_refused_by_name(tmp_path):
    repo, key = tmp_path / "repo", tmp_path / "key"
    cli("init", repo, "--key-file", key, "--new-key")
    raw = tmp_path / "raw"
    raw.write_bytes(bytes(range(200, 232)))          # not UTF-8, not hex
    os.chmod(str(raw), 0o600)
    for args in (("find", repo, "--key-file", raw), ("init", tmp_path / "new", "--key-file",
                                                    raw)):
        err = _one_error_line(cli(*args), 1)
        assert "not 64 hex digits" in err and "32 raw bytes" in err and "xxd -p -c32" in err
    assert not (tmp_path / "new").exists()


def test_a_fifo_as_key_file_is_refused_at_once(tmp_path):
    repo, key = tmp_path / "repo", tmp_path / "key"
    cli("init", repo, "--key-file", key, "--new-key")
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo), 0o600)
    for args in (("find", repo, "--key-file", fifo), ("list", repo, "--key-file", fifo),
                 ("init", tmp_path / "new", "--key-file", fifo)):
        r = cli(*args)                                # cli() times out after 120 s
        if args[0] == "list":                         # needs no key: does not open it
            assert r.returncode == 0, r.stderr
            continue
        err = _one_error_line(r, 1)
        assert "is a FIFO, not a regular file" in err
    r = cli("run", repo, tmp_path, env={"MAILSTORE_KEY_FILE": fifo})
    assert "is a FIFO" in _one_error_line(r, 1)
