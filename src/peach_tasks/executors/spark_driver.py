"""Runs as the Spark application's driver: ``spark-submit ... spark_driver.py REQUEST.json``.

It starts the SparkSession (so the task's code finds ready ``spark`` and ``sc`` globals,
as in a Spark-backed Jupyter), records the application id and UI address, runs the
request through ``bootstrap.run_request`` and stops the session when the entry
function returns. Imports only the standard library and pyspark.
"""

from __future__ import annotations

import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))

# PySpark raises this, deep in a worker, when the executors' Python is not the driver's.
_MISMATCH_MARKERS = ("PYTHON_VERSION_MISMATCH", "Python in worker has different version")


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    sys.path.insert(0, _HERE)
    import bootstrap  # the same code path as the python executor

    sys.path.remove(_HERE)  # the executors' folder is not the task's to import from

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    sc = spark.sparkContext
    info = {"application_id": sc.applicationId, "ui": sc.uiWebUrl, "master": sc.master,
            "driver_python": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    _write_json(request["spark_info_path"], info)
    print(f"peach-tasks: Spark application {sc.applicationId} on {sc.master}"
          + (f", UI {sc.uiWebUrl}" if sc.uiWebUrl else ""), flush=True)
    try:
        status = bootstrap.run_request(request, {"spark": spark, "sc": sc})
    finally:
        try:
            spark.stop()
        except Exception as exc:  # a stop failure must not hide the task's own outcome
            print(f"peach-tasks: stopping the Spark session failed: {exc!r}", file=sys.stderr)
    _explain_version_mismatch(request["result_path"], info["driver_python"])
    return status


def _explain_version_mismatch(result_path: str, driver: str) -> None:
    try:
        with open(result_path, encoding="utf-8") as handle:
            result = json.load(handle)
    except (OSError, ValueError):
        return
    error = result.get("error") or {}
    if result.get("ok") or not any(m in (error.get("traceback") or "") for m in _MISMATCH_MARKERS):
        return
    error["last_line"] = (
        f"the Spark executors run a different Python minor version than the driver ({driver}); "
        "the organisation's environment archive must run on the cluster nodes' interpreter: "
        "build it with the cluster's Python version or align the nodes")
    _write_json(result_path, result)


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, default=repr)
    os.replace(tmp, path)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
