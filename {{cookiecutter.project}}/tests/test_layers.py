"""The layers: a stage's code dependencies in dvc.yaml are exactly the layers its module imports.

import-linter (``make lint``) keeps every import pointing down the layers; this keeps dvc.yaml
honest about them, so a change reruns exactly the stages whose code it can affect.
"""

import grimp
import yaml

from .pipeline_run import ROOT

PACKAGE = "{{ cookiecutter.package }}"
SOURCE = f"src/{PACKAGE}/"


def test_each_stage_depends_on_exactly_the_layers_its_module_imports():
    graph = grimp.build_graph(PACKAGE)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert stages
    for name, stage in stages.items():
        module = stage["cmd"].split(" -m ")[1].split()[0]
        imported = graph.find_upstream_modules(module) | {module}
        layers = {m.split(".")[1] for m in imported if m.startswith(f"{PACKAGE}.")}
        declared = {d.removeprefix(SOURCE) for d in stage["deps"] if isinstance(d, str) and d.startswith(SOURCE)}
        assert declared == layers, f"dvc.yaml stage {name!r}: deps {sorted(declared)}, {module} imports {sorted(layers)}"


def test_no_stage_after_training_depends_on_the_training_layer():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    # benchmark fits the benchmark model beside train: a training stage too.
    later = [name for name in stages if name not in ("generate", "prepare", "validate", "benchmark", "train")]
    assert later
    for name in later:
        assert f"{SOURCE}training" not in stages[name]["deps"], name
