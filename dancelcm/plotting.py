"""A row of line-plot panels saved as a PNG (evaluation and report plots); matplotlib, headless."""

from __future__ import annotations

from pathlib import Path


def panel_row(n: int, width: float = 4.5, height: float = 3.5):
    """(figure, list of n axes) on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def finish(fig, axes, path: Path, xlabel: str, titles: list[str], xlog: bool = False) -> Path:
    """Grid, labels, one legend on the first panel; writes ``path`` and closes the figure."""
    import matplotlib.pyplot as plt

    for ax, title in zip(axes, titles):
        if xlog:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
