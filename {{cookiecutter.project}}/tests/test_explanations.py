"""``model.explanations`` in params.yaml: the kinds this repository can give, and the model each needs.

An impossible combination is refused when params.yaml is read, in one line naming the key, so
a pipeline cannot train a model its service would fail to explain.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from {{ cookiecutter.package }}.core import use_case
from {{ cookiecutter.package }}.core.errors import ParamsError
from {{ cookiecutter.package }}.core.params import load_params, parse
from {{ cookiecutter.package }}.core.use_case import Explanations

from .conftest import ROOT

TRAIN = "{{ cookiecutter.package }}.training.train"  # the stage module, run as DVC runs it
RAW = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
REASON_CODES_WITH_INTERACTIONS = (
    "params.yaml: model.explanations: reason_codes needs model.interaction_cst: no_interactions (got null)"
)


def with_model(**changes) -> dict:
    """The boosted model's settings (whatever model.kind params.yaml has) with ``changes``."""
    return {**RAW, "model": {**RAW["model"], "kind": "gbm", **changes}}


def test_the_default_is_one_this_repository_can_give():
    assert load_params(ROOT / "params.yaml").model.explanations in use_case.load().explanations


def test_reason_codes_on_a_model_with_interactions_are_refused_naming_the_key():
    with pytest.raises(ParamsError) as caught:
        parse(with_model(explanations="reason_codes", interaction_cst=None))
    assert str(caught.value) == REASON_CODES_WITH_INTERACTIONS


@pytest.mark.parametrize("kind", list(Explanations))
def test_each_kind_is_accepted_exactly_where_the_use_case_ships_it(kind):
    settings = with_model(explanations=kind.value, interaction_cst="no_interactions")
    if kind in use_case.load().explanations:
        assert parse(settings).model.explanations is kind
    else:
        with pytest.raises(ParamsError) as caught:
            parse(settings)
        assert str(caught.value).startswith(f"params.yaml: model.explanations: {kind.value} needs shap"), caught.value


def test_an_unknown_kind_is_refused_naming_the_key():
    with pytest.raises(ParamsError) as caught:
        parse(with_model(explanations="shapley"))
    assert str(caught.value) == (
        "params.yaml: 'model.explanations' must be 'reason_codes' or 'feature_contributions', got 'shapley'"
    )


def test_a_stage_with_the_bad_combination_exits_non_zero_with_one_line_and_writes_nothing(tmp_path):
    shutil.copy(ROOT / "contract.yaml", tmp_path / "contract.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_model(explanations="reason_codes", interaction_cst=None)))
    before = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run([sys.executable, "-m", TRAIN], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR")]
    assert errors == [f"ERROR {{ cookiecutter.package }}: {REASON_CODES_WITH_INTERACTIONS}"]
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
