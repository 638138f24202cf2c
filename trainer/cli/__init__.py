"""The `trainer` command line: the only place (with its submodules) that knows about click.

Commands live in their own submodules, listed in `_COMMANDS` and imported on first use by
lcdata's `LazyGroup` (which also turns an `LcposeError` into a one-line error, exit 1).
"""

from __future__ import annotations

import sys

import click

from lcdata.cli import LazyGroup

# command name -> "module:attribute" of its click command
_COMMANDS: dict[str, str] = {
    "fit": "trainer.cli.fit:fit",
    "plot": "trainer.cli.fit:plot",
    "export": "trainer.cli.export:export",
    "evaluate": "trainer.cli.evaluate:evaluate",
    "predict": "trainer.cli.evaluate:predict",
}


@click.group(cls=LazyGroup, commands_map=_COMMANDS)
@click.version_option(package_name="lcpose")
def cli() -> None:
    """trainer: train, export, evaluate and look at OpenPose models on lcdata stores."""


def main() -> None:
    cli(prog_name="trainer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
