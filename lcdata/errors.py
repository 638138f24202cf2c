"""The one exception type for input or state a user can fix."""

from __future__ import annotations


class LcposeError(ValueError):
    """Bad input or store state, described in one line naming the file/field and the problem.

    The CLIs print it as `Error: <message>` and exit with status 1, without a traceback.
    """
