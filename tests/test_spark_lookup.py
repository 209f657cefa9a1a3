"""One lookup of spark-submit: the Spark executor and the checks made before any run
(validate, sync) agree on which spark-submit a run uses and on why there is none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peach_tasks.executors.spark import find_spark_submit
from peach_tasks.executors.spark_check import spark_missing


def test_a_configured_spark_submit_that_does_not_exist_is_refused_by_both(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-spark-submit")
    reason = spark_missing(missing)
    assert reason == f"spark.submit in scheduler.yaml is {missing!r}, which does not exist"
    with pytest.raises(RuntimeError) as raised:
        find_spark_submit(missing)
    assert str(raised.value) == reason  # the run fails with the words validate and sync show


def test_spark_home_comes_before_the_pyspark_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    submit = tmp_path / "bin" / "spark-submit"
    submit.parent.mkdir()
    submit.write_text("#!/bin/sh\n")
    monkeypatch.setenv("SPARK_HOME", str(tmp_path))
    assert find_spark_submit(None) == str(submit)
    assert spark_missing(None) is None


def test_without_spark_home_it_is_the_pyspark_package_own(monkeypatch: pytest.MonkeyPatch) -> None:
    pyspark = pytest.importorskip("pyspark")
    monkeypatch.delenv("SPARK_HOME", raising=False)
    found = find_spark_submit(None)
    assert found == str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    assert os.path.isfile(found)
