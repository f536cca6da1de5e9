"""Writing report plots: headless, small, and byte-stable across reruns (no timestamps)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def figure(path: Path, size: tuple[float, float] = (5, 4)) -> Iterator:
    """Yield a matplotlib Axes; on exit the figure is saved to ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield ax
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90, metadata={"Software": None})
    finally:
        plt.close(fig)
