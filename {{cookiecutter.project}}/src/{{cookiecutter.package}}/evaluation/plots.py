"""Writing report plots: headless, small, and byte-stable across reruns (no timestamps)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.stage import atomic_path


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
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=90, metadata={"Software": None})
    finally:
        plt.close(fig)
