"""User-facing errors: one clear line, never a traceback."""


class UserError(Exception):
    """Bad input the user can fix; the message names the file or record and what to do."""


class RecordError(UserError):
    """A bad record inside a batch: reported, counted, and the batch goes on."""
