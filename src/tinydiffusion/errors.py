"""The one exception type that reaches users as a sentence instead of a traceback."""


class UserError(Exception):
    """Something the user can fix: a bad file, argument or missing data.

    The message is one sentence saying what is wrong and how to fix it; the command line
    prints it as `error: <message>` and exits with status 2.
    """
