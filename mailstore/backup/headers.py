"""The three headers `find` searches, decoded at backup time (pyzmail36 does the decoding)."""
import email.parser
import email.policy
import email.utils

from pyzmail.parse import decode_mail_header, get_mail_addresses

# Headers longer than this are not worth parsing for a search index.
_HEADER_LIMIT = 64 * 1024
_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def decode(data):
    """(From, Subject, Date as unix time) of a message; any of them None when absent or bad.

    Never raises: a message with broken headers is still backed up, just harder to find.
    """
    ends = [i for i in (data.find(b"\n\n", 0, _HEADER_LIMIT),
                        data.find(b"\r\n\r\n", 0, _HEADER_LIMIT)) if i >= 0]
    head = data[:min(ends) + 1] if ends else data[:_HEADER_LIMIT]
    try:
        msg = _parser.parsebytes(head)
    except Exception:
        return None, None, None
    sender = subject = date = None
    try:
        addresses = get_mail_addresses(msg, "from")
        if addresses:
            sender = ", ".join("{} <{}>".format(n, a) if n else a for n, a in addresses)
    except Exception:
        sender = None
    try:
        raw = msg.get("subject")
        if raw is not None:
            subject = decode_mail_header(str(raw)).strip()
    except Exception:
        subject = None
    try:
        raw = msg.get("date")
        if raw is not None:
            date = int(email.utils.parsedate_to_datetime(str(raw)).timestamp())
    except Exception:
        date = None
    return sender, subject, date
