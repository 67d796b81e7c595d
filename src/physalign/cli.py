"""The ``physalign`` command line: a thin layer over the library.

Each command group lives in ``physalign.commands.<name>`` and is registered here; commands parse
arguments, call the library, and print. No logic of their own.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Post-train text-to-video generators toward physical plausibility.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from physalign.commands import bench, demo, evaluate, sample, select, train, world
    from physalign.commands import judge, precompute, reason, suite, teacher

    app.add_typer(world.app, name="world")
    app.command("train")(train.train_command)
    app.command("train-autoencoder")(train.train_autoencoder_command)
    app.command("export")(train.export_command)
    app.command("train-teacher")(teacher.train_teacher_command)
    app.command("convert-teacher")(teacher.convert_teacher_command)
    app.command("train-judge")(judge.train_judge_command)
    app.command("sample")(sample.sample_command)
    app.command("eval")(evaluate.eval_command)
    app.command("demo")(demo.demo_command)
    app.command("bench")(bench.bench_command)
    app.command("select")(select.select_command)
    app.command("select-pool")(select.pool_command)
    app.command("reason")(reason.reason_command)
    app.command("generate-suite")(suite.generate_suite_command)
    app.command("score-suite")(suite.score_suite_command)
    app.command("light-metrics")(suite.light_metrics_command)
    app.command("precompute")(precompute.precompute_command)


_register()


def main() -> None:
    from physalign.process import die_with_parent, reuse_freed_memory

    die_with_parent()  # the `physalign` entry point's children too
    reuse_freed_memory()
    app()


if __name__ == "__main__":
    main()
