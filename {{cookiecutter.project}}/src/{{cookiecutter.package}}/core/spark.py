"""The Spark session every Spark stage uses: local by default, a cluster or Spark Connect from settings alone.

Where it runs, first match wins:

1. ``SPARK_REMOTE``, else ``spark.remote`` in params.yaml (e.g. ``sc://spark-connect.internal:15002``):
   a Spark Connect server (``local[N]`` starts one inside this process, as ``pyspark --remote`` does);
2. launched by ``spark-submit`` (``--master yarn``, ``k8s://...``): the master spark-submit set;
3. ``SPARK_MASTER``, else ``spark.master`` in params.yaml (default ``local[2]``).

``spark.conf`` in params.yaml is passed to the session as written; over Spark Connect the
server keeps its own static settings (``spark.driver.memory`` ...), and the session logs which.
pyspark is imported here only when a session is asked for, so the light core stays importable
without it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

from .errors import UserError
from .params import Params, SparkParams
from .stage import LOGGER

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


def remote(params: Params | None = None, env: dict[str, str] | None = None) -> str | None:
    """The Spark Connect address the session uses, if any: ``SPARK_REMOTE``, else ``spark.remote``."""
    env = os.environ if env is None else env
    return env.get(REMOTE_ENV) or settings(params).remote or None


def where(params: Params | None = None, env: dict[str, str] | None = None) -> str:
    """Where the session runs, as a person would name it (``sc://...``, ``spark-submit``, ``local[2]``)."""
    env = os.environ if env is None else env
    if remote(params, env):
        return str(remote(params, env))
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
    connect = remote(params)
    if target.startswith("local"):
        # Local Python workers (pandas UDFs, mapInArrow) must be this interpreter (this venv, this
        # package), not the first python3 on PATH; on a cluster PYSPARK_PYTHON names the executors' own.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if connect:
        builder = builder.remote(connect)
    elif not os.environ.get(SUBMIT_ENV):
        builder = builder.master(target)
    try:
        with warnings.catch_warnings(record=True) as kept:
            warnings.simplefilter("always")
            session = builder.getOrCreate()
    except PySparkException as exc:
        hint = (
            "Spark needs Java 17 or 21: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
            if "JAVA_GATEWAY_EXITED" in str(getattr(exc, "getCondition", lambda: "")()) or "Java gateway" in str(exc)
            else str(exc).splitlines()[0]
        )
        raise SparkStartError(f"Spark session on {target} could not start: {hint}") from None
    # Spark Connect sets the settings after the server started: a static one (spark.driver.memory)
    # stays the server's. pyspark warns once per key; one line names them all.
    refused = [str(w.message) for w in kept if "CANNOT_MODIFY_CONFIG" in str(w.message)]
    for other in (w for w in kept if "CANNOT_MODIFY_CONFIG" not in str(w.message)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if refused:
        static = ", ".join(sorted({text.removeprefix("Failed to set ").split(" to ")[0] for text in refused}))
        logging.getLogger(LOGGER).info("Spark Connect %s keeps its own %s (static settings are the server's)", target, static)
    if not connect:  # a Connect client has no SparkContext: the server sets its own log level
        session.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "ERROR"))
    return session
