"""The shared plot helper: log NFE axes carry plain ticks at the plotted values, nothing else."""

from dancelcm.plotting import finish, panel_row


def test_log_axis_ticks_are_the_plotted_values(tmp_path):
    fig, axes = panel_row(2)
    axes[0].plot([2, 4, 8, 20, 50], [1, 2, 3, 4, 5], marker="o", label="a")  # less than two decades
    axes[1].plot([1, 2, 4], [3, 2, 1], marker="o", label="b")
    out = finish(fig, axes, tmp_path / "p.png", "NFE", ["one", "two"], xlog=True)
    assert out.exists() and out.stat().st_size > 0
    for ax, want in zip(axes, ([2, 4, 8, 20, 50], [1, 2, 4])):
        ticks = list(ax.get_xticks())
        assert ticks == want
        assert [ax.xaxis.get_major_formatter()(v, 0) for v in want] == [f"{v:g}" for v in want]
        assert len(ax.xaxis.get_minor_locator()()) == 0
        assert ax.get_xscale() == "log"
