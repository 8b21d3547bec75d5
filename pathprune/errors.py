"""The one exception type the command line turns into a clean one-line error."""


class UserError(Exception):
    """Bad input or an impossible request: shown to the user as one line, exit code 2."""
