"""Rows of line-plot panels saved as a PNG (evaluation and report plots); matplotlib, headless."""

from __future__ import annotations

from pathlib import Path


def panel_row(n: int, width: float = 4.5, height: float = 3.5, max_cols: int = 4):
    """(figure, list of n axes) on the headless Agg backend: one row of up to ``max_cols`` panels, else an even
    grid (9 panels: 3 x 3), spare cells hidden."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(n / max_cols)
    cols = math.ceil(n / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def colours(labels) -> dict[str, str]:
    """One fixed colour per line label, the same in every panel (matplotlib's cycle restarts per panel, so a
    label missing from one panel would shift the colours of the others there)."""
    return {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(labels))}


def finish(fig, axes, path: Path, xlabel: str, titles: list[str], xlog: bool = False) -> Path:
    """Grid, labels, one legend on the first panel (with the lines of all panels); writes ``path``, closes the
    figure."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    for ax, title in zip(axes, titles):
        if xlog:
            # ticks at the plotted x values, written plainly (matplotlib's log axis labels minor ticks as
            # overlapping "2x10^0" when a panel spans less than a decade)
            xs = sorted(
                {float(x) for line in ax.get_lines() if line.get_gid() != "hline" for x in line.get_xdata() if x > 0}
            )
            ax.set_xscale("log")
            if xs:
                ax.set_xticks(xs)
                ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles: dict[str, object] = {}  # every label of every panel, once, on the first panel
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        axes[0].legend(list(handles.values()), list(handles), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
