"""The errors of mailstore.icinga: every failure the caller sees is an :class:`IcingaError`
whose message names the object and the cause (the CLI prints it and exits 1)."""


class IcingaError(Exception):
    """Anything that kept a request from doing what was asked; the message says what/why."""


class DescriptionError(IcingaError):
    """The description file is not what the docstring describes; names the key."""
