"""The `lcdata` command line: the only place (with its submodules) that knows about click.

Each command lives in its own submodule and is listed in `_COMMANDS`; commands are imported
lazily so that `lcdata --help` stays fast and one broken optional dependency does not take
the whole tool down.
"""

from __future__ import annotations

import importlib
import sys

import click

from lcdata.errors import LcposeError

# command name -> "module:attribute" of its click command
_COMMANDS: dict[str, str] = {
    "synth": "lcdata.cli.synth:synth",
    "synth-figure": "lcdata.cli.synth:synth_figure",
    "build-teacher-cache": "lcdata.cli.build:build_teacher_cache",
    "inspect": "lcdata.cli.inspect:inspect",
    "correct": "lcdata.cli.correct:correct",
    "show": "lcdata.cli.correct:show",
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
        except LcposeError as err:
            # user-fixable problems: one line, no traceback, exit status 1
            raise click.ClickException(str(err)) from None


@click.group(cls=LazyGroup, commands_map=_COMMANDS)
@click.version_option(package_name="lcpose")
def cli() -> None:
    """lcdata: COCO keypoints -> teacher caches -> label-corrected training stores."""


def main() -> None:
    cli(prog_name="lcdata")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
