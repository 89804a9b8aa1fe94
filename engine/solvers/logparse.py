"""Reading training logs as Caffe's tools/extra/parse_log.py does.

Rows: one per iteration that printed outputs, for the train net ("Train net
output #k: name = v") and the test nets ("Test net output #k: ..."), each with
NumIters, Seconds (since the "Solving" line) and the last LearningRate seen.
Works on our logs and on Caffe's, including glog's newer `I20261122 ...` time
stamps and pycaffe-driven logs that have no "Solving" line (the first time
stamp is then the start), where Caffe's script gives up.
"""

import csv
import datetime
import math
import os
import re
from collections import OrderedDict

ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+|nan|inf|-inf)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+|nan|inf|-inf)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
STAMP = re.compile(r"^[IWEF](\d{8}|\d{4}) (\d\d):(\d\d):(\d\d)\.(\d+)\s")


def line_time(line, year):
    """The datetime of a glog line (MMDD or YYYYMMDD form), or None for a line without one."""
    match = STAMP.match(line.strip() + " ")
    if not match:
        return None
    date, hour, minute, second, fraction = match.groups()
    if len(date) == 8:
        year, date = int(date[:4]), date[4:]
    micros = int(fraction[:6].ljust(6, "0"))
    try:
        return datetime.datetime(year, int(date[:2]), int(date[2:]), int(hour), int(minute), int(second), micros)
    except ValueError:
        return None


def _start_time(lines, year):
    """Caffe starts the clock at the "Solving" line; without one, at the first time stamp."""
    first = None
    for line in lines:
        stamp = line_time(line, year)
        if stamp is None:
            continue
        if first is None:
            first = stamp
        if "Solving" in line:
            return stamp
    return first


def _add_output(match, row, rows, iteration, seconds, rate):
    if match:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds), ("LearningRate", rate)])
        row[match.group(2)] = float(match.group(3))
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def parse_lines(lines, year=None):
    """(train rows, test rows) from the lines of a log."""
    year = year or datetime.date.today().year
    lines = list(lines)
    start = _start_time(lines, year)
    iteration, rate = -1, math.nan
    train, test = [], []
    train_row = test_row = None
    for line in lines:
        match = ITERATION.search(line)
        if match:
            iteration = float(match.group(1))
        if iteration == -1:
            continue
        stamp = line_time(line, year)
        if stamp is None:
            continue
        seconds = (stamp - start).total_seconds()
        match = LEARNING_RATE.search(line)
        if match:
            rate = float(match.group(1))
        train_row = _add_output(TRAIN_OUTPUT.search(line), train_row, train, iteration, seconds, rate)
        test_row = _add_output(TEST_OUTPUT.search(line), test_row, test, iteration, seconds, rate)
    for rows in (train, test):
        # The first rows come before the first "lr =" line: Caffe copies the second row's rate.
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train, test


def parse_log(path):
    """(train rows, test rows) of a log file; the year of MMDD stamps is the file's, as Caffe takes it."""
    year = datetime.datetime.fromtimestamp(os.path.getctime(path)).year
    with open(path, errors="replace") as handle:
        return parse_lines(handle, year)


def write_csv(path, rows, delimiter=","):
    """One CSV file in Caffe's dialect (excel: CRLF line ends); a header only when there are no rows."""
    fields = list(rows[0].keys()) if rows else ["NumIters", "Seconds", "LearningRate"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, dialect=csv.excel, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def save_csv_files(log_path, output_dir, train, test, delimiter=","):
    """`<log name>.train` and `<log name>.test` in output_dir; returns their paths."""
    base = os.path.basename(log_path)
    paths = (os.path.join(output_dir, base + ".train"), os.path.join(output_dir, base + ".test"))
    write_csv(paths[0], train, delimiter)
    write_csv(paths[1], test, delimiter)
    return paths
