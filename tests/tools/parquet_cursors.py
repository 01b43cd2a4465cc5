#!/usr/bin/env python3
"""Prints the `cursor` of every row of every *.parquet file under a directory, one per line, read
with pyarrow (a reader that is not ours): the crash tests compare them with the journal's."""
import os
import sys

import pyarrow.parquet as pq

for dirpath, _dirs, files in os.walk(sys.argv[1]):
    for name in sorted(files):
        if name.endswith(".parquet"):
            column = pq.read_table(os.path.join(dirpath, name), columns=["cursor"]).column(0)
            sys.stdout.write("".join(c + "\n" for c in column.to_pylist()))
