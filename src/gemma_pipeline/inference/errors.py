"""Errors a user can fix by changing what they typed or pointed at."""


class UserInputError(ValueError):
    """A missing artifact, an unreadable file, an empty or too-long prompt...

    The console script prints the message alone (one line, no traceback) and exits non-zero,
    so the message must say what was wrong and where.
    """
