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


def test_a_line_missing_from_the_first_panel_keeps_its_colour_and_legend(tmp_path, monkeypatch):
    from dancelcm.evaluation.plots import plot_quality_vs_nfe

    def row(nfe, **m):
        return {"nfe": nfe, **{k: {"mean": v, "std": 0.0} for k, v in m.items()}}

    summary = {  # the teacher has no "PSNR vs teacher": the first panel lacks its line
        "teacher DDIM-50 CFG 2": row(100, psnr_figure=19.8),
        "A 1-step": row(1, psnr_vs_teacher=29.0, psnr_figure=20.5),
        "A 4-step": row(4, psnr_vs_teacher=32.0, psnr_figure=19.8),
        "B 1-step": row(1, psnr_vs_teacher=29.3, psnr_figure=20.4),
        "B 4-step": row(4, psnr_vs_teacher=28.3, psnr_figure=20.3),
    }
    import matplotlib.pyplot as plt

    seen = {}
    real_close = plt.close

    def spy_close(fig):  # read the panels before the figure is closed
        for ax in fig.axes:
            for line in ax.get_lines():
                seen.setdefault(line.get_label(), set()).add(line.get_color())
        seen["legend"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        real_close(fig)

    monkeypatch.setattr(plt, "close", spy_close)
    assert plot_quality_vs_nfe(summary, tmp_path / "q.png").exists()
    assert seen["A"] == {"C1"} and seen["B"] == {"C2"} and seen["teacher DDIM CFG 2"] == {"C0"}
    assert seen["legend"] == ["A", "B", "teacher DDIM CFG 2"]
