"""Stage ``validation_pack``: what a model validator asks for, on the out-of-time test set.

Writes ``reports/validation_pack.json`` (shape: ``core/reports.py`` ``ValidationPackReport``;
keys documented in docs/validation.md): ROC-AUC with its DeLong interval and against the first
validated model (``models/validation_reference.json``), the gains/KS table by score band, and,
with a master scale in params.yaml (``grades``), each grade's count, observed default rate, mean
PD, Jeffreys and binomial tests, Hosmer-Lemeshow over the grades, grade concentration and each
row's grade (the pull request's migration matrix compares them). Fraud repositories add
precision and recall at the threshold and the fraud rate by value per value band. The
statistics are ``evaluation/calibration.py``'s. Key figures are logged to the training run, so
the model card reads them back from MLflow like every other number.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import tracking
from ..core import config, model, use_case
from ..core.contract import Contract, load_contract
from ..core.params import Params, load_params
from ..core.reports import (
    Concentration,
    Discrimination,
    Gains,
    GainsBand,
    GradeAssignments,
    GradeRow,
    Grades,
    HosmerLemeshowResult,
    ModelMeta,
    StatTest,
    ValidationPackReport,
    ValidationReference,
    ValueBand,
    ValueBands,
)
from ..core.stage import LOGGER, entry_point
from . import calibration

log = logging.getLogger(LOGGER)


def verdict(p_value: float, significance: float) -> StatTest:
    """A p-value and whether it passes: below ``significance`` fails."""
    return StatTest(p_value=round(p_value, 6), status="fail" if p_value < significance else "pass")


def _r(x: float | None) -> float | None:
    # Rounded so the same data, params and code give a byte-identical pack.
    return None if x is None else round(float(x), 6)


def encode_assignments(keys: pd.Series, grade_idx: np.ndarray) -> GradeAssignments:
    """Each row's grade index as one byte, rows ordered by key, compressed; the keys fingerprinted."""
    order = np.argsort(keys.astype(str).to_numpy(), kind="stable")
    ordered_keys = keys.astype(str).to_numpy()[order]
    digest = hashlib.sha256("\n".join(ordered_keys).encode()).hexdigest()
    packed = base64.b64encode(zlib.compress(grade_idx[order].astype(np.uint8).tobytes(), 9)).decode()
    return GradeAssignments(rows=len(order), keys_sha256=digest, grades=packed)


def decode_assignments(assignments: GradeAssignments) -> np.ndarray:
    """The grade indices ``encode_assignments`` packed, in key order."""
    raw = np.frombuffer(zlib.decompress(base64.b64decode(assignments.grades)), dtype=np.uint8)
    if len(raw) != assignments.rows:
        raise ValueError(f"grade assignments hold {len(raw)} rows, not the {assignments.rows} they declare")
    return raw.astype(int)


def grade_table(
    y: np.ndarray, pd_: np.ndarray, scale: dict[str, float], significance: float
) -> tuple[list[GradeRow], np.ndarray, HosmerLemeshowResult, Concentration]:
    """Every grade's row, each row's grade index, Hosmer-Lemeshow over the grades and their concentration."""
    idx = calibration.grade_index(pd_, list(scale.values()))
    in_grade = [idx == k for k in range(len(scale))]
    counts = [int(m.sum()) for m in in_grade]
    means = [float(pd_[m].mean()) if m.any() else None for m in in_grade]
    rows, hl, concentration = grade_rows(counts, [int(y[m].sum()) for m in in_grade], means, scale, significance)
    return rows, idx, hl, concentration


def grade_rows(
    counts: Sequence[int], defaults: Sequence[int], mean_pds: Sequence[float | None], scale: dict[str, float], significance: float
) -> tuple[list[GradeRow], HosmerLemeshowResult, Concentration]:
    """Every grade's row, Hosmer-Lemeshow over the grades and their concentration, from each grade's counts and mean PD."""
    names, bounds = list(scale), list(scale.values())
    rows, means = [], []
    for k, name in enumerate(names):
        n, d, mean_pd = int(counts[k]), int(defaults[k]), mean_pds[k]
        rows.append(
            GradeRow(
                grade=name,
                pd_low=bounds[k - 1] if k else 0.0,
                pd_high=bounds[k],
                rows=n,
                defaults=d,
                observed_rate=_r(d / n) if n else None,
                mean_pd=_r(mean_pd),
                jeffreys=verdict(calibration.jeffreys_p_value(d, n, mean_pd), significance) if n else None,
                binomial=verdict(calibration.binomial_p_value(d, n, mean_pd), significance) if n else None,
            )
        )
        means.append(mean_pd if n else 0.5)  # empty grades are dropped by hosmer_lemeshow
    hl = calibration.hosmer_lemeshow(defaults, counts, means)
    hhi, normalised = calibration.herfindahl(counts)
    hl_result = HosmerLemeshowResult(statistic=_r(hl.statistic), df=hl.df, **verdict(hl.p_value, significance).model_dump())
    return rows, hl_result, Concentration(hhi=_r(hhi), normalised=_r(normalised))


def band_labels(edges: Sequence[float]) -> list[str]:
    """``[0, 30, 100]`` -> ``["0-30", "30-100", "100+"]``."""
    fmt = [f"{e:g}" for e in edges]
    return [f"{lo}-{hi}" for lo, hi in zip(fmt, fmt[1:], strict=False)] + [f"{fmt[-1]}+"]


def value_band(label: str, low: float, high: float | None, y: np.ndarray, flagged: np.ndarray, value: np.ndarray) -> ValueBand:
    """Precision and recall of the flags, and fraudulent value over total value, among the given rows."""
    y, flagged = y.astype(bool), flagged.astype(bool)
    sums = (len(y), int(y.sum()), int(flagged.sum()), int((y & flagged).sum()), float(value.sum()), float(value[y].sum()))
    return value_band_of_sums(label, low, high, *sums)


def value_band_of_sums(
    label: str,
    low: float,
    high: float | None,
    rows: int,
    frauds: int,
    flagged: int,
    caught: int,
    total: float,
    fraud_value: float,
) -> ValueBand:
    """:func:`value_band` from the band's counts (rows, frauds, flagged, flagged frauds) and value sums."""
    return ValueBand(
        band=label,
        low=low,
        high=high,
        rows=int(rows),
        frauds=int(frauds),
        flagged=int(flagged),
        precision=_r(caught / flagged) if flagged else None,
        recall=_r(caught / frauds) if frauds else None,
        value=round(total, 2),
        fraud_value=round(fraud_value, 2),
        fraud_rate_by_value=_r(fraud_value / total) if total > 0 else None,
    )


def value_bands(y: np.ndarray, flagged: np.ndarray, value: np.ndarray, edges: Sequence[float], column: str) -> ValueBands:
    """Fraud figures per value band (lower edges ``edges``; values below the first edge join the first band)."""
    value = np.nan_to_num(np.asarray(value, dtype=float), nan=0.0)
    which = np.maximum(np.searchsorted(np.asarray(edges, dtype=float), value, side="right") - 1, 0)
    bands = []
    for k, label in enumerate(band_labels(edges)):
        m = which == k
        high = float(edges[k + 1]) if k + 1 < len(edges) else None
        bands.append(value_band(label, float(edges[k]), high, y[m], flagged[m], value[m]))
    overall = value_band("all", float(edges[0]), None, y, flagged, value)
    return ValueBands(column=column, bands=bands, overall=overall)


def reference(auc: calibration.AucInterval, rows: int, meta: ModelMeta) -> tuple[ValidationReference, bool]:
    """The committed reference, or this model's figures written as the reference when there is none yet."""
    path = config.VALIDATION_REFERENCE
    if path.exists():
        ref = ValidationReference.read(path)
        return ref, ref.run_id == meta.run_id
    ref = ValidationReference(roc_auc=_r(auc.auc), se=_r(auc.se), rows=rows, run_id=meta.run_id, git_sha=meta.git_sha)
    ref.write(path)
    log.info("no %s yet: this model (run %s) is now the reference; commit the file", path, meta.run_id)
    return ref, True


def build(
    params: Params,
    contract: Contract,
    meta: ModelMeta,
    test: pd.DataFrame,
    score: np.ndarray,
    ref: ValidationReference | None = None,
) -> ValidationPackReport:
    """The pack for held-out rows ``test`` and their scores; ``ref`` None reads (or sets) the committed reference."""
    settings = params.validation_pack
    y = model.target_vector(test, contract).astype(int)
    auc = calibration.delong_auc(y, score, settings.confidence)
    gains = calibration.gains_table(y, score, settings.score_bands)
    graded = None
    if params.grades is not None:
        rows, idx, hl, concentration = grade_table(y, score, params.grades, settings.significance)
        graded = (rows, hl, concentration, encode_assignments(test[contract.row_key], idx))
    bands = None
    if settings.value_bands is not None and contract.monetary is not None:
        flagged = score >= meta.threshold
        bands = value_bands(y, flagged, test[contract.monetary].to_numpy(), settings.value_bands, contract.monetary)
    return assemble(params, contract, meta, len(y), int(y.sum()), auc, gains, graded, bands, ref)


def assemble(
    params: Params,
    contract: Contract,
    meta: ModelMeta,
    n_rows: int,
    positives: int,
    auc: calibration.AucInterval,
    gains_rows: list[calibration.GainsRow],
    graded: tuple[list[GradeRow], HosmerLemeshowResult, Concentration, GradeAssignments] | None,
    bands_out: ValueBands | None,
    ref: ValidationReference | None = None,
) -> ValidationPackReport:
    """The pack from its computed parts (the pandas and the Spark stage compute them each their way)."""
    settings = params.validation_pack
    alpha = settings.significance
    same = False
    if ref is None:
        ref, same = reference(auc, n_rows, meta)
    else:
        same = ref.run_id == meta.run_id
    discrimination = Discrimination(
        roc_auc=_r(auc.auc),
        se=_r(auc.se),
        ci_low=_r(auc.low),
        ci_high=_r(auc.high),
        confidence=settings.confidence,
        method="DeLong",
        reference=ref,
        reference_is_this_model=same,
        change=_r(auc.auc - ref.roc_auc),
        decline=verdict(calibration.auc_decline_p_value(ref.roc_auc, auc), alpha),
    )
    bands = [GainsBand(**{k: _r(v) if isinstance(v, float) else v for k, v in vars(row).items()}) for row in gains_rows]
    gains = Gains(bands=bands, ks=max(b.ks for b in bands))

    grades, grades_why = None, None
    if params.grades is None:
        grades_why = "params.yaml has no master scale (grades)"
    elif graded is not None:
        rows, hl, concentration, assignments = graded
        grades = Grades(
            scale=dict(params.grades), rows=rows, hosmer_lemeshow=hl, concentration=concentration, assignments=assignments
        )

    bands_why = None
    if settings.value_bands is None:
        bands_why = "params.yaml sets no validation_pack.value_bands"
    elif contract.monetary is None:
        bands_why = f"{contract.path} marks no column 'monetary: true'"

    failed = [] if discrimination.decline.status == "pass" else ["roc_auc_decline"]
    if grades is not None:
        failed += [f"jeffreys:{r.grade}" for r in grades.rows if r.jeffreys and r.jeffreys.status == "fail"]
        failed += [f"binomial:{r.grade}" for r in grades.rows if r.binomial and r.binomial.status == "fail"]
        failed += ["hosmer_lemeshow"] if grades.hosmer_lemeshow.status == "fail" else []
    return ValidationPackReport(
        schema_version=1,
        use_case=use_case.load().name,
        run_id=meta.run_id,
        rows=n_rows,
        positives=positives,
        threshold=meta.threshold,
        significance=alpha,
        discrimination=discrimination,
        gains=gains,
        grades=grades,
        grades_why_not=grades_why,
        value_bands=bands_out,
        value_bands_why_not=bands_why,
        failed_tests=failed,
    )


def metric_key(name: str) -> str:
    """A grade or band name as part of an MLflow metric key."""
    # MLflow metric names allow letters, digits, _ - . / and spaces; a grade may be called "AA+".
    return re.sub(r"[^\w.\- /]", "_", name)


def mlflow_metrics(pack: ValidationPackReport) -> dict[str, float]:
    """The figures the model card shows, as flat MLflow metric keys ``validation.*``."""
    d = pack.discrimination
    out = {
        "validation.roc_auc": d.roc_auc,
        "validation.roc_auc_ci_low": d.ci_low,
        "validation.roc_auc_ci_high": d.ci_high,
        "validation.reference_roc_auc": d.reference.roc_auc,
        "validation.roc_auc_decline_p": d.decline.p_value,
        "validation.ks": pack.gains.ks,
    }
    if pack.grades is not None:
        g = pack.grades
        out |= {
            "validation.hosmer_lemeshow": g.hosmer_lemeshow.statistic,
            "validation.hosmer_lemeshow_p": g.hosmer_lemeshow.p_value,
            "validation.herfindahl": g.concentration.hhi,
            "validation.herfindahl_normalised": g.concentration.normalised,
        }
        for r in g.rows:
            key = f"validation.grade.{metric_key(r.grade)}"
            out[f"{key}.n"] = float(r.rows)
            out[f"{key}.defaults"] = float(r.defaults)
            if r.rows:
                out[f"{key}.observed_rate"] = r.observed_rate
                out[f"{key}.mean_pd"] = r.mean_pd
                out[f"{key}.jeffreys_p"] = r.jeffreys.p_value
                out[f"{key}.binomial_p"] = r.binomial.p_value
    if pack.value_bands is not None:
        for b in [*pack.value_bands.bands, pack.value_bands.overall]:
            key = f"validation.band.{metric_key(b.band)}"
            out[f"{key}.n"] = float(b.rows)
            for k in ("precision", "recall", "fraud_rate_by_value"):
                if getattr(b, k) is not None:
                    out[f"{key}.{k}"] = getattr(b, k)
    return out


def main() -> int:
    """Write ``reports/validation_pack.json`` and log its key figures to the training run."""
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    pipeline = model.load(config.MODEL)
    test = pd.read_parquet(config.TEST)
    score = model.scores(pipeline, test, contract)
    return publish(build(params, contract, meta, test, score), meta)


def publish(pack: ValidationPackReport, meta: ModelMeta) -> int:
    """Write the pack, log its key figures to the training run and its headline to the console."""
    pack.write(config.VALIDATION_PACK)

    import mlflow

    with tracking.resume_run(meta):
        mlflow.log_metrics(mlflow_metrics(pack))
        mlflow.log_artifact(str(config.VALIDATION_PACK))
    d = pack.discrimination
    log.info(
        "ROC-AUC %.4f [%.4f, %.4f] (reference %.4f); failed tests: %s; %s",
        d.roc_auc,
        d.ci_low,
        d.ci_high,
        d.reference.roc_auc,
        ", ".join(pack.failed_tests) or "none",
        config.VALIDATION_PACK,
    )
    return 0


if __name__ == "__main__":
    entry_point(main)
