#!/usr/bin/env python3
"""Rewrites a Parquet file with row groups of N rows, then overwrites the data pages of row group
K with garbage (footer and other row groups intact): a file with one unreadable row group, to test
that the readable ones are kept. Usage: damage_row_group.py FILE N K"""
import sys

import pyarrow.parquet as pq

path, rows, broken = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
table = pq.read_table(path)
pq.write_table(table, path, row_group_size=rows, compression="zstd")
meta = pq.ParquetFile(path).metadata
assert meta.num_row_groups > broken, meta
with open(path, "r+b") as f:
    group = meta.row_group(broken)
    for c in range(group.num_columns):
        column = group.column(c)
        start = column.dictionary_page_offset or column.data_page_offset
        f.seek(start)
        f.write(b"\x5a" * column.total_compressed_size)
print(meta.num_rows - meta.row_group(broken).num_rows)
