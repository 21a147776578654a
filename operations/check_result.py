"""One result of `python -m operations.status`: a check's name, its verdict and a detail.

Every check of the status command (operations/network_checks.py, dns_checks.py, host_checks.py)
returns these; operations/status.py only formats them and turns them into the exit status.
Kept apart so that the check modules and the command share the shape without importing each
other.
"""
from dataclasses import asdict, dataclass

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
VERDICTS = (OK, WARN, FAIL, SKIP)


@dataclass(frozen=True)
class Result:
    """`status` is one of VERDICTS; `check` names what was checked (e.g. "port smtp/25",
    "cert submission/587", "dns MX cacert.org."); `detail` says what was found, in one line."""
    status: str
    check: str
    detail: str

    def __post_init__(self):
        if self.status not in VERDICTS:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(VERDICTS)}")

    def line(self):
        """The one text line of this result: `STATUS  check  detail`."""
        return f"{self.status:<4}  {self.check}  {self.detail}"

    def as_dict(self):
        return asdict(self)
