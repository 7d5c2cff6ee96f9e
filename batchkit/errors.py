"""User-facing errors: one clear line, never a traceback.

Exit codes: 0 all done; 1 some records failed (the batch went on); 2 a fatal
input (missing folder, unreadable annotation file, invalid flag); 3 a bug
(with its traceback); 130 Ctrl-C; 143 SIGTERM.
"""


class UserError(Exception):
    """Bad input the user can fix; the message names the file or record and what to do."""


class RecordError(UserError):
    """A bad record inside a batch: reported, counted, and the batch goes on."""


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (temporary files are removed on the way out)."""


class Skipped(Exception):
    """A record left alone on purpose (e.g. an earlier stage rejected it): reported once, counted as skipped."""
