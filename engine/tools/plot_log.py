"""Plot a training log: train loss, test outputs (accuracy, SSD's detection_eval
mAP, loss) and the learning rate against iterations, into one PNG. Needs
matplotlib; without it, says so and points at tools/parse_log, which writes the
same numbers as CSV.

usage: plot_log LOG OUT.png
"""

import sys
from pathlib import Path

from ..solvers.logparse import parse_log


AXES = ("loss", "accuracy / mAP", "learning rate")
# Outputs whose names hold one of these go on the score axis (scores in [0, 1]); the rest on the loss axis.
SCORES = ("acc", "detection_eval")
FIXED = ("NumIters", "Seconds", "LearningRate")


def _series(rows, key):
    points = [(row["NumIters"], row[key]) for row in rows if key in row]
    return [p[0] for p in points], [p[1] for p in points]


def new_figure(pyplot):
    """A figure with the three stacked axes of AXES, sharing the iteration axis."""
    return pyplot.subplots(3, 1, figsize=(8, 10), sharex=True)


def draw(axes, train, test, label="", dashed=False):
    """Draw one log's curves: train and test outputs on the loss or score axis (by
    name, SCORES), the learning rate on the third. `label` prefixes the legend entries."""
    prefix = f"{label} " if label else ""
    for rows, kind, style in ((train, "train", "-"), (test, "test", "o-")):
        style = style.replace("-", "--") if dashed else style
        names = [k for k in (rows[0] if rows else {}) if k not in FIXED]
        for name in names:
            target = axes[1] if any(score in name.lower() for score in SCORES) else axes[0]
            target.plot(*_series(rows, name), style, label=f"{prefix}{kind} {name}", markersize=3)
    axes[2].plot(*_series(train or test, "LearningRate"), "--" if dashed else "-", label=f"{prefix}learning rate")


def finish(figure, axes, title, out_path):
    for ax, label in zip(axes, AXES):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="best")
    axes[2].set_xlabel("iterations")
    axes[0].set_title(title)
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)


def load_pyplot(program):
    """matplotlib's pyplot on the Agg backend, or None after one line saying it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        print(f"{program}: matplotlib is not installed (pip install matplotlib); "
              "tools/parse_log writes the same data as CSV files", file=sys.stderr)
        return None
    return pyplot


def plot(log_path, out_path, pyplot):
    train, test = parse_log(log_path)
    if not train and not test:
        raise ValueError(f"no train or test outputs found in {log_path}")
    figure, axes = new_figure(pyplot)
    draw(axes, train, test)
    finish(figure, axes, Path(log_path).name, out_path)
    pyplot.close(figure)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if len(argv) != 2:
        print("usage: plot_log LOG OUT.png", file=sys.stderr)
        return 1
    log_path, out_path = argv
    if not Path(log_path).is_file():
        print(f"plot_log: log file not found: {log_path}", file=sys.stderr)
        return 1
    pyplot = load_pyplot("plot_log")
    if pyplot is None:
        return 1
    try:
        plot(log_path, out_path, pyplot)
    except (ValueError, OSError) as exc:
        print(f"plot_log: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {out_path}")
    return 0

