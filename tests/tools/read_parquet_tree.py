#!/usr/bin/env python3
"""Reads every *.parquet file under a directory with pyarrow (a reader that is not ours) and prints
one JSON object per row: the file (relative path), its Arrow schema, and the row's columns, with
timestamps as integer microseconds since the epoch. Used by the integration tests."""
import json
import os
import sys

import pyarrow.parquet as pq

try:  # a second reader that is not ours, where installed (scripts/setup.sh --for-tests does)
    import polars
except ImportError:
    polars = None


def main(root):
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".parquet"):
                continue
            path = os.path.join(dirpath, name)
            table = pq.read_table(path)
            if polars is not None:
                frame = polars.read_parquet(path)
                assert frame.height == table.num_rows, f"polars reads {frame.height} rows of {path}"
            schema = ", ".join(
                f"{f.name}:{f.type}{'' if f.nullable else ' not null'}" for f in table.schema
            )
            columns = {}
            for field in table.schema:
                col = table.column(field.name)
                if str(field.type).startswith("timestamp"):
                    col = col.cast("int64")
                columns[field.name] = col.to_pylist()
            for i in range(table.num_rows):
                row = {k: v[i] for k, v in columns.items()}
                row["_file"] = os.path.relpath(path, root)
                row["_schema"] = schema
                print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1])
