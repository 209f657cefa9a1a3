"""Whether this machine can run Spark tasks, told before the first run fails.

``executor`` defaults to ``spark``, as in the tutorial, so a first ``peach.yaml`` that
leaves it out asks for Spark. Where there is no ``spark-submit``, every run of such a
task would fail with "no spark-submit"; ``validate`` warns about it and ``sync`` records
a problem at each such task's definition (shown by ``sync``, ``tasks``, the dashboard
and the ``serve`` log).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Iterable

from ..errors import Problem
from ..model import Executor, TaskSpec


class SparkSubmitMissing(LookupError):
    """No ``spark-submit`` can be found; the message says where it was looked for."""


def spark_submit_path(submit: str | None) -> str:
    """The ``spark-submit`` that Spark runs use: ``spark.submit`` from scheduler.yaml, else
    ``$SPARK_HOME/bin/spark-submit``, else the pyspark package's own.

    One lookup for the executor and for the checks made before any run, so both agree.
    It finds pyspark without importing it (slow). Raises SparkSubmitMissing saying why.
    """
    if submit:
        if Path(submit).is_file() or shutil.which(submit):
            return submit
        raise SparkSubmitMissing(f"spark.submit in scheduler.yaml is {submit!r}, which does not exist")
    home = os.environ.get("SPARK_HOME")
    if home and Path(home, "bin", "spark-submit").exists():
        return str(Path(home, "bin", "spark-submit"))
    spec = importlib.util.find_spec("pyspark")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations)), "bin", "spark-submit"))
    raise SparkSubmitMissing("no spark-submit: neither spark.submit in scheduler.yaml, nor $SPARK_HOME, nor the "
                             "pyspark package ('peach-tasks[spark]')")


def spark_missing(submit: str | None) -> str | None:
    """Why no ``spark-submit`` can be found (as the Spark executor looks for it), or None."""
    try:
        spark_submit_path(submit)
    except SparkSubmitMissing as exc:
        return str(exc)
    return None


def spark_tasks(specs: Iterable[TaskSpec]) -> list[TaskSpec]:
    return [spec for spec in specs if spec.executor == Executor.SPARK]


def advice(reason: str, where: str = "this scheduler") -> str:
    return (f"{where} has no Spark ({reason}), so every run of it would fail. For a plain Python "
            "task set 'executor: python'; for Spark, install 'peach-tasks[spark]' or set spark.submit")


def spark_problems(specs: Iterable[TaskSpec], reason: str) -> dict[str, list[Problem]]:
    """One config problem per Spark task, at its definition, grouped by repository."""
    found: dict[str, list[Problem]] = {}
    for spec in spark_tasks(specs):
        found.setdefault(spec.repo, []).append(Problem(
            "config", spec.repo,
            f"task '{spec.codops}/{spec.name}' uses the spark executor (the default when 'executor' is not "
            f"set), but {advice(reason)}", spec.source_file, spec.source_line))
    return found
