"""Compare two training logs (Caffe's and ours, or any two runs): final figures side by side,
the largest difference over the iterations both logged, and optionally one PNG with both
logs' loss, accuracy and learning-rate curves overlaid (A solid, B dashed).

usage: compare_logs A.log B.log [--output PLOT.png]

The logs are read as tools/parse_log reads them (Caffe's glog lines, ours
being the same), and drawn as tools/plot_log draws one log (needs matplotlib).
"""

import argparse
import math
from pathlib import Path

from . import run
from .plot_log import FIXED, draw, finish, load_pyplot, new_figure
from ..errors import CaffeError
from ..solvers.logparse import parse_log


def _outputs(rows):
    names = []
    for row in rows:
        names.extend(k for k in row if k not in FIXED and k not in names)
    return names


def _last(rows, key):
    values = [row for row in rows if key in row]
    return (values[-1]["NumIters"], values[-1][key]) if values else (None, None)


def final_figures(train, test):
    """{figure: value}: the last iteration and learning rate, then each output's last value."""
    figures = {}
    rows = train or test
    if rows:
        figures["last iteration"] = int(max(row["NumIters"] for row in train + test))
        figures["learning rate"] = _last(rows, "LearningRate")[1]
        figures["seconds"] = max(row["Seconds"] for row in train + test)
    for kind, kind_rows in (("train", train), ("test", test)):
        for name in _outputs(kind_rows):
            figures[f"{kind} {name}"] = _last(kind_rows, name)[1]
    return figures


def largest_differences(a, b):
    """{figure: (largest |A - B|, at iteration, iterations compared)} over the iterations both logs
    report, for every output both have, train and test, and the learning rate."""
    result = {}
    for kind, rows_a, rows_b in (("train", a[0], b[0]), ("test", a[1], b[1])):
        by_iter_b = {row["NumIters"]: row for row in rows_b}
        names = [n for n in _outputs(rows_a) if n in _outputs(rows_b)]
        if kind == "train":
            names = ["LearningRate"] + names
        for name in names:
            pairs = [(row["NumIters"], row[name], by_iter_b[row["NumIters"]][name]) for row in rows_a
                     if name in row and name in by_iter_b.get(row["NumIters"], {})]
            if not pairs:
                continue
            gaps = [(abs(x - y) if not (math.isnan(x) or math.isnan(y)) else math.inf, it) for it, x, y in pairs]
            gap, iteration = max(gaps, key=lambda g: g[0])
            label = "learning rate" if name == "LearningRate" else f"{kind} {name}"
            result[label] = (gap, iteration, len(pairs))
    return result


def _text(value):
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def report(path_a, path_b, a, b):
    """The side-by-side table, as lines."""
    fig_a, fig_b = final_figures(*a), final_figures(*b)
    names = list(fig_a) + [n for n in fig_b if n not in fig_a]
    head_a, head_b = Path(path_a).name, Path(path_b).name
    if head_a == head_b:
        head_a, head_b = str(path_a), str(path_b)
    width = max(len(n) for n in names + ["final figure"])
    col = max(14, len(head_a), len(head_b))
    lines = [f"{'final figure':<{width}}  {head_a:>{col}}  {head_b:>{col}}  {'B - A':>12}"]
    for name in names:
        x, y = fig_a.get(name), fig_b.get(name)
        diff = _text(y - x) if x is not None and y is not None and name != "seconds" else ""
        lines.append(f"{name:<{width}}  {_text(x):>{col}}  {_text(y):>{col}}  {diff:>12}")
    gaps = largest_differences(a, b)
    if gaps:
        lines.append("")
        lines.append("largest |A - B| at the iterations both logs report:")
        for name, (gap, iteration, count) in gaps.items():
            lines.append(f"  {name:<{width}}  {_text(gap)} at iteration {int(iteration)} ({count} compared)")
    else:
        lines.append("")
        lines.append("the logs report no iteration in common")
    return lines


def _read(path):
    if not Path(path).is_file():
        raise CaffeError(f"log file not found: {path}")
    train, test = parse_log(path)
    if not train and not test:
        raise CaffeError(f"no train or test outputs found in {path}")
    return train, test


def plot(path_a, path_b, a, b, out_path):
    pyplot = load_pyplot("compare_logs")
    if pyplot is None:
        return 1
    figure, axes = new_figure(pyplot)
    draw(axes, *a, label=f"A ({Path(path_a).name})")
    draw(axes, *b, label=f"B ({Path(path_b).name})", dashed=True)
    try:
        finish(figure, axes, f"A: {Path(path_a).name}   B: {Path(path_b).name}", out_path)
    except OSError as exc:
        raise CaffeError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    finally:
        pyplot.close(figure)
    print(f"Wrote {out_path}")
    return 0


def _main(argv):
    parser = argparse.ArgumentParser(prog="compare_logs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_a", help="first training log (A)")
    parser.add_argument("log_b", help="second training log (B)")
    parser.add_argument("--output", help="write the overlaid curves to this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    a, b = _read(args.log_a), _read(args.log_b)
    print("\n".join(report(args.log_a, args.log_b, a, b)))
    if args.output:
        return plot(args.log_a, args.log_b, a, b, args.output)
    return 0


def main(argv=None):
    return run(_main, argv, prefix="compare_logs")
