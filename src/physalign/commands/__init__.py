"""The CLI's command groups (registered in ``physalign.cli``); shared handling of training errors."""

from __future__ import annotations

import contextlib

import typer


@contextlib.contextmanager
def training_errors(*failures: type[Exception]):
    """Inside the block, a config mistake exits 2 (a usage error) and a failed run (``TrainingError`` or one of
    ``failures``) exits 1, each printed as ``error: ...`` instead of a traceback."""
    from physalign.train.config import ConfigError
    from physalign.train.loop import TrainingError

    try:
        yield
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except (TrainingError, *failures) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
