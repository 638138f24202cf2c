"""The one exception type for input or state a user can fix, and its one-line messages."""

from __future__ import annotations


class LcposeError(ValueError):
    """Bad input or store state, described in one line naming the file/field and the problem.

    The CLIs print it as `Error: <message>` and exit with status 1, without a traceback.
    """


class ConfigError(LcposeError):
    """A config field with a value the library refuses.

    The message names the field as the library knows it (`BuildConfig.views_per_image: ...`);
    a command line whose option carries the field's name rewords it as that option
    (`--views-per-image: ...`), see `for_option`.

    Attributes:
        owner: the config class (or function) the field belongs to, e.g. "TrainConfig".
        field: the field or argument name, e.g. "steps".
        problem: what is wrong with it, e.g. "must be >= 1, got 0".
    """

    def __init__(self, owner: str, field: str, problem: str) -> None:
        super().__init__(f"{owner}.{field}: {problem}")
        self.owner = owner
        self.field = field
        self.problem = problem

    def for_option(self, option: str) -> str:
        """The message as a command line says it: `--<option>: <problem>`."""
        return f"{option}: {self.problem}"


def one_line(err: BaseException, limit: int = 200) -> str:
    """`TypeName: message` of a caught exception on one line, at most `limit` characters of
    message (third-party errors can span pages)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}"
