"""What the dataset tools share: a progress bar on terminals, and writing Datum
records in Caffe's batches of 1000 per transaction (their one-line errors come
from engine.tools.run).
"""

import sys

COMMIT_EVERY = 1000  # Caffe's tools commit a transaction every 1000 records


def progress(iterable, total, desc):
    """A tqdm bar when stderr is a terminal, else the iterable unchanged."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", file=sys.stderr)


class RecordWriter:
    """Puts records and commits every COMMIT_EVERY of them, logging as Caffe does."""

    def __init__(self, writer, log):
        self.writer, self.log, self.count = writer, log, 0

    def put(self, key, value):
        self.writer.put(key, value)
        self.count += 1
        if self.count % COMMIT_EVERY == 0:
            self.writer.commit()
            self.log.debug("Processed %d files.", self.count)

    def close(self):
        self.writer.commit()
        self.writer.close()
        if self.count % COMMIT_EVERY != 0:
            self.log.debug("Processed %d files.", self.count)
