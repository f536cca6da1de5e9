"""The Spark session every Spark stage uses: local by default, a cluster or Spark Connect from settings alone.

Where it runs, first match wins:

1. ``SPARK_REMOTE`` (e.g. ``sc://spark-connect.internal:15002``): a Spark Connect server;
2. launched by ``spark-submit`` (``--master yarn``, ``k8s://...``): the master spark-submit set;
3. ``SPARK_MASTER``, else ``spark.master`` in params.yaml (default ``local[2]``).

``spark.conf`` in params.yaml is passed to the session as written. pyspark is imported here
only when a session is asked for, so the light core stays importable without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import UserError
from .params import Params, SparkParams

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REMOTE_ENV = "SPARK_REMOTE"
MASTER_ENV = "SPARK_MASTER"
# spark-submit starts the Python driver with this set; the master is then spark-submit's to choose.
SUBMIT_ENV = "PYSPARK_GATEWAY_PORT"


class SparkStartError(UserError, RuntimeError):
    """Spark could not start (no Java, an unreachable master or Connect server)."""


def settings(params: Params | None) -> SparkParams:
    """The ``spark`` section of params.yaml, or its defaults."""
    return params.spark if params is not None else SparkParams()


def where(params: Params | None = None, env: dict[str, str] | None = None) -> str:
    """Where the session runs, as a person would name it (``sc://...``, ``spark-submit``, ``local[2]``)."""
    env = os.environ if env is None else env
    if env.get(REMOTE_ENV):
        return env[REMOTE_ENV]
    if env.get(SUBMIT_ENV):
        return "spark-submit"
    return env.get(MASTER_ENV) or settings(params).master


def get_session(params: Params | None = None) -> SparkSession:
    """The active Spark session, created from params.yaml's ``spark`` section if there is none."""
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    spark = settings(params)
    builder = SparkSession.builder.appName(spark.app_name)
    for key, value in spark.conf.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    target = where(params)
    if os.environ.get(REMOTE_ENV):
        builder = builder.remote(os.environ[REMOTE_ENV])
    elif not os.environ.get(SUBMIT_ENV):
        builder = builder.master(target)
    try:
        session = builder.getOrCreate()
    except PySparkException as exc:
        hint = (
            "Spark needs Java 17 or 21: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
            if "JAVA_GATEWAY_EXITED" in str(getattr(exc, "getCondition", lambda: "")()) or "Java gateway" in str(exc)
            else str(exc).splitlines()[0]
        )
        raise SparkStartError(f"Spark session on {target} could not start: {hint}") from None
    if not os.environ.get(REMOTE_ENV):
        session.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "ERROR"))
    return session
