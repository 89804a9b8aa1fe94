"""Parse a training log into two CSV files, as Caffe's tools/extra/parse_log.py:
LOG.train and LOG.test (NumIters, Seconds, LearningRate, then one column per
net output), written into OUTDIR (default: the current folder).

usage: parse_log LOG [OUTDIR] [--delimiter ,] [--verbose]
"""

import argparse
import sys
from pathlib import Path

from ..solvers.logparse import parse_log, save_csv_files


def main(argv=None):
    parser = argparse.ArgumentParser(description="Parse a Caffe training log into two CSV files containing "
                                                 "training and testing information")
    parser.add_argument("logfile_path", help="Path to log file")
    parser.add_argument("output_dir", nargs="?", default=".", help="Directory in which to place output CSV files")
    parser.add_argument("--verbose", action="store_true", help="Print some extra info (e.g., output filenames)")
    parser.add_argument("--delimiter", default=",", help="Column delimiter in output files (default: '%(default)s')")
    args = parser.parse_args(argv)
    if not Path(args.logfile_path).is_file():
        print(f"parse_log: log file not found: {args.logfile_path}", file=sys.stderr)
        return 1
    if not Path(args.output_dir).is_dir():
        print(f"parse_log: output folder not found: {args.output_dir}", file=sys.stderr)
        return 1
    train, test = parse_log(args.logfile_path)
    try:
        paths = save_csv_files(args.logfile_path, args.output_dir, train, test, args.delimiter)
    except OSError as exc:
        print(f"parse_log: cannot write CSV files: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.verbose:
        for path in paths:
            print(f"Wrote {path}")
    return 0

