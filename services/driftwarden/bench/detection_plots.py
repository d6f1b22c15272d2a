"""One PNG per stream for ``driftwarden bench detection``: the signal, the true drifts, every alarm."""

from __future__ import annotations

from pathlib import Path

from driftwarden.bench.detection import PLOT_EVERY, StreamRun


def plot_run(run: StreamRun, path: Path) -> None:
    """Top: the signal (trailing mean) with drift starts; bottom: each configuration's alarms."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("plots need matplotlib: pip install 'driftwarden[bench]'") from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = list(run.alarms)
    figure, (top, bottom) = pyplot.subplots(
        2, 1, figsize=(11, 3 + 0.3 * len(names)), sharex=True, height_ratios=[2, 0.5 + 0.2 * len(names)]
    )
    for label, values in run.signal.items():
        top.plot([PLOT_EVERY * (i + 1) for i in range(len(values))], values, linewidth=0.8, label=label)
    for axis in (top, bottom):
        for d in run.drifts:
            axis.axvspan(d.start, d.start + d.width, color="tab:red", alpha=0.25 if d.width > 1 else 0.6, lw=1)
    top.set_ylabel(run.signal_label)
    top.legend(loc="upper right", fontsize=8)
    top.set_title(f"{run.stream} (seed {run.seed}): true drifts in red, alarms below")
    for row, name in enumerate(names):
        bottom.scatter(run.alarms[name], [row] * len(run.alarms[name]), marker="|", s=60, linewidths=1)
    bottom.set_yticks(range(len(names)), names, fontsize=8)
    bottom.set_ylim(-0.7, len(names) - 0.3)
    bottom.invert_yaxis()
    bottom.set_xlabel("event")
    bottom.set_xlim(0, run.n_events)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
