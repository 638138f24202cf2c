"""The `lcdata` command line: the only place (with its submodules) that knows about click.

Each command lives in its own submodule and is listed in `_COMMANDS`; commands are imported
lazily so that `lcdata --help` stays fast and one broken optional dependency does not take
the whole tool down. Library errors name config fields (`BuildConfig.seed: must be >= 0`);
here they are reworded as the option that sets the field (`--seed: must be >= 0`).
"""

from __future__ import annotations

import importlib
import sys

import click

from lcdata.errors import ConfigError, LcposeError

# command name -> "module:attribute" of its click command
_COMMANDS: dict[str, str] = {
    "synth": "lcdata.cli.synth:synth",
    "synth-figure": "lcdata.cli.synth:synth_figure",
    "build-teacher-cache": "lcdata.cli.build:build_teacher_cache",
    "inspect": "lcdata.cli.inspect:inspect",
    "correct": "lcdata.cli.correct:correct",
    "show": "lcdata.cli.correct:show",
    "score-labels": "lcdata.cli.score:score_labels",
    "audit": "lcdata.cli.score:audit",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def __init__(self, *args, commands_map: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._commands_map = commands_map

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._commands_map))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._commands_map:
            module, attr = self._commands_map[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            option = option_for(self.get_command(ctx, ctx.invoked_subcommand or ""), err.field)
            raise click.ClickException(err.for_option(option) if option else str(err)) from None
        except LcposeError as err:
            # user-fixable problems: one line, no traceback, exit status 1
            raise click.ClickException(str(err)) from None


def key_values(items: tuple[str, ...], *, option: str, example: str) -> dict[str, str]:
    """Repeated KEY=VALUE options -> {key: raw value} (the command types the values)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LcposeError(f"{option} {item!r}: expected KEY=VALUE, e.g. {example}")
        out[key] = value
    return out


def option_for(command: click.Command | None, field: str) -> str | None:
    """The command-line option that sets config field `field` (its longest spelling), or None.

    A command whose option names differ from the fields they set says so in a
    `field_options` attribute ({field: "--option"}).
    """
    if command is None:
        return None
    named = getattr(command, "field_options", {}).get(field)
    if named:
        return named
    for param in command.params:
        if isinstance(param, click.Option) and param.name == field:
            return max(param.opts, key=len)
    return None


@click.group(cls=LazyGroup, commands_map=_COMMANDS)
@click.version_option(package_name="lcpose")
def cli() -> None:
    """lcdata: COCO keypoints -> teacher caches -> label-corrected training stores."""


def main() -> None:
    cli(prog_name="lcdata")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
