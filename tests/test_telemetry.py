"""The template's own Makefile and CI switch off the telemetry the generated package lists.

The list lives once, in the generated core/config.py (``helpers.TELEMETRY_OFF`` reads it);
a bake's Makefile, workflows and service environments are held to it by the bake's own
tests/test_config.py.
"""

from __future__ import annotations

import re

import yaml
from helpers import TELEMETRY_OFF, TEMPLATE

TELEMETRY_NAME = re.compile(r"DO_NOT_TRACK|ANALYTICS|TELEMETRY")


def telemetry(env: dict[str, str]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if TELEMETRY_NAME.search(k)}


def test_the_template_makefile_exports_exactly_the_list():
    text = (TEMPLATE / "Makefile").read_text(encoding="utf-8")
    exports = {m[1]: m[2].strip() for m in re.finditer(r"^export (\w+) [:?]?= ?(.*)$", text, flags=re.M)}
    assert telemetry(exports) == TELEMETRY_OFF


def test_the_template_ci_sets_exactly_the_list():
    ci = yaml.safe_load((TEMPLATE / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    assert telemetry(ci["env"]) == TELEMETRY_OFF

