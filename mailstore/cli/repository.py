"""How every command that works on a backup repository is told which one, and its key.

The same for `mailstore backup ...` and `mailstore check backup`: the repository as the first
positional argument (REPO), or `-r/--repo REPO`, or else the environment variable
MAILSTORE_REPOSITORY (like restic's RESTIC_REPOSITORY, borg's BORG_REPO); the key file as
`--key-file F`, or else MAILSTORE_KEY_FILE (like RESTIC_PASSWORD_FILE).

REPO is optional in front of the other positional arguments, so `backup run REPO SOURCE_ROOT`
and `backup run -r REPO SOURCE_ROOT` (or `backup run SOURCE_ROOT` with the environment) all
work: a command knows how many positional arguments it takes after REPO, so the count says
whether REPO was given. REPO and --repo both given and different is a usage error.
"""
import functools
import os

import click

REPOSITORY_ENV = "MAILSTORE_REPOSITORY"
KEY_FILE_ENV = "MAILSTORE_KEY_FILE"


def _same_path(a, b):
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def choose_repository(positional, option, environ=os.environ):
    """The repository from REPO, --repo or the environment (in that order); UsageError if
    there is none, or if REPO and --repo name different ones."""
    if positional is not None and option is not None and not _same_path(positional, option):
        raise click.UsageError("the repository is given twice, differently: REPO {} and "
                               "--repo {}".format(positional, option))
    repo = positional if positional is not None else option
    if repo is None:
        repo = environ.get(REPOSITORY_ENV) or None
    if repo is None:
        raise click.UsageError("no repository: give REPO, -r/--repo REPO or set {}".format(
            REPOSITORY_ENV))
    return repo


def repo_option(help_text="The repository (instead of the REPO argument)."):
    return click.option("-r", "--repo", "repo_option", metavar="REPO", default=None,
                        help="{}  [env var: {}]".format(help_text, REPOSITORY_ENV))


def key_file_option(help_text):
    return click.option("--key-file", type=click.Path(dir_okay=False), default=None,
                        envvar=KEY_FILE_ENV, show_envvar=True, help=help_text)


def repo_arguments(*names):
    """Decorator for a click command taking `[REPO] NAME...`: the command function receives
    `repo` (chosen by choose_repository) and one keyword argument per name (lower case)."""
    metavar = " ".join(("[REPO]",) + tuple(n.upper() for n in names))

    def decorate(func):
        @functools.wraps(func)
        def command(positionals, repo_option, **kwargs):
            if len(positionals) > len(names) + 1:
                raise click.UsageError("too many arguments ({}): expected {}".format(
                    " ".join(positionals[len(names) + 1:]), metavar))
            if len(positionals) < len(names):
                missing = names[len(positionals):]
                raise click.UsageError("missing {}: expected {}".format(
                    " ".join(n.upper() for n in missing), metavar))
            given = positionals[0] if len(positionals) > len(names) else None
            values = positionals[len(positionals) - len(names):]
            kwargs.update(zip(names, values))
            return func(repo=choose_repository(given, repo_option), **kwargs)
        # the options the decorators below this one attached (copied by wraps) stay on it
        command.__click_params__ = list(getattr(func, "__click_params__", []))
        command = repo_option()(command)
        return click.argument("positionals", nargs=-1, metavar=metavar)(command)
    return decorate
