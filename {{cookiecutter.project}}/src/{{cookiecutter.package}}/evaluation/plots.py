"""Writing report plots: headless, small, and byte-stable across reruns (no timestamps)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.stage import atomic_path

LEGEND_KEY = "Description"  # PNG text keyword holding the legend's entries, one a line


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
        metadata = {"Software": None}
        # The legend's entries (which curves, with their AUC) go into the PNG's text chunk too:
        # what a plot shows can then be read, and tested, without decoding its pixels.
        labels = ax.get_legend_handles_labels()[1]
        if labels and path.suffix == ".png":
            metadata[LEGEND_KEY] = "\n".join(labels)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=90, metadata=metadata)
    finally:
        plt.close(fig)
