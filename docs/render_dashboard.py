"""Draw the shipped Grafana dashboard's panels from a real Prometheus's answers (matplotlib).

    python docs/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --dashboard <bake>/deploy/grafana/dashboards/decision-service.json --out docs/dashboard.png

Grafana is not packaged for this machine, so the template's picture of the dashboard is
drawn here: each panel of the JSON, at its grid position, with its own PromQL evaluated by
Prometheus over the last ``--minutes``. tests/test_monitoring.py calls it on the live stack.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

# Grafana's variables, as Grafana would fill them for a short window and a 1 s scrape.
VARIABLES = {"$__rate_interval": "30s", "$__range": "{minutes}m"}


def expand(expr: str, minutes: int) -> str:
    """A panel's PromQL with Grafana's variables filled in."""
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value.format(minutes=minutes))
    return expr


def query(prometheus: str, expr: str, start: float | None = None, end: float | None = None) -> list[dict]:
    """Prometheus's result for ``expr``: an instant query, or a range query when start/end are given."""
    if start is None:
        params, path = {"query": expr}, "query"
    else:
        params, path = {"query": expr, "start": start, "end": end, "step": max(1, int((end - start) / 120))}, "query_range"
    url = f"{prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (a loopback URL given by the caller)
        answer = json.loads(resp.read())
    if answer["status"] != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {answer}")
    return answer["data"]["result"]


def label(metric: dict) -> str:
    shown = {k: v for k, v in metric.items() if k not in {"__name__", "job", "instance"}}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "all"


def render(prometheus: str, dashboard: dict, out: Path, minutes: int = 5) -> int:
    """Write the picture; returns the number of series drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) // 8
    fig = plt.figure(figsize=(16, 3.6 * rows))
    fig.suptitle(f"{dashboard['title']} (Grafana JSON drawn from live Prometheus queries)", fontsize=13)
    end = time.time()
    start = end - minutes * 60
    drawn = 0
    for panel in panels:
        grid = panel["gridPos"]
        ax = fig.add_subplot(rows, 2, (grid["y"] // 8) * 2 + grid["x"] // 12 + 1)
        ax.set_title(panel["title"], fontsize=10)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if panel["type"] == "timeseries":
            for target in panel["targets"]:
                expr = expand(target["expr"], minutes)
                for series in query(prometheus, expr, start, end):
                    xs = [float(t) - end for t, _ in series["values"]]
                    ys = [float(v) for _, v in series["values"]]
                    name = label(series["metric"])
                    if len(panel["targets"]) > 1:
                        name = expr.split("(", 2)[1].split(",")[0].strip() if expr.startswith("histogram_quantile") else name
                        name = f"p{float(name) * 100:g}" if name.replace(".", "").isdigit() else name
                    ax.plot(xs, ys, label=name)
                    drawn += 1
            ax.set_xlabel("seconds ago")
            ax.set_ylabel(unit)
            if ax.lines:
                ax.legend(fontsize=7, loc="upper left")
        else:
            bars = []
            for target in panel["targets"]:
                for series in query(prometheus, expand(target["expr"], minutes)):
                    bars.append((label(series["metric"]), float(series["value"][1])))
                    drawn += 1
            if "le" in " ".join(name for name, _ in bars):  # a histogram: cumulative buckets to counts per bin
                bars.sort(key=lambda b: float(b[0].split("=")[1].replace("+Inf", "inf")))
                counts = [bars[0][1]] + [b[1] - a[1] for a, b in zip(bars, bars[1:], strict=False)]
                bars = [(name.split("=")[1], count) for (name, _), count in zip(bars, counts, strict=True)]
            ax.barh([name for name, _ in bars], [value for _, value in bars])
            ax.tick_params(axis="y", labelsize=7)
        if not ax.lines and not ax.patches:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--dashboard", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=int, default=5)
    args = parser.parse_args()
    drawn = render(args.prometheus, json.loads(args.dashboard.read_text()), args.out, args.minutes)
    print(f"wrote {args.out} ({drawn} series)")


if __name__ == "__main__":
    main()
