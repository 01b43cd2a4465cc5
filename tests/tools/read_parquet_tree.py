#!/usr/bin/env python3
"""Reads every *.parquet file under a directory with pyarrow (a reader that is not ours) and prints
one JSON object per row: the file (relative path), its Arrow schema, the row's columns, with
timestamps as integer microseconds since the epoch, and `_entry`: the whole entry as
`journalctl -o json --all` prints it, put together by the README's rule (the columns that hold a
field, overlaid with `fields`), independently of our code and of DuckDB. Used by the integration
tests."""
import json
import os
import sys

import pyarrow.parquet as pq

try:  # a second reader that is not ours, where installed (scripts/setup.sh --for-tests does)
    import polars
except ImportError:
    polars = None


# Column -> the journal field it holds (when `fields` does not override it).
FIELD_OF_COLUMN = {
    "cursor": "__CURSOR",
    "timestamp": "__REALTIME_TIMESTAMP",
    "monotonic_usec": "__MONOTONIC_TIMESTAMP",
    "boot_id": "_BOOT_ID",
    "hostname": "_HOSTNAME",
    "message": "MESSAGE",
    "priority": "PRIORITY",
    "syslog_identifier": "SYSLOG_IDENTIFIER",
    "systemd_unit": "_SYSTEMD_UNIT",
    "pid": "_PID",
    "uid": "_UID",
    "gid": "_GID",
    "comm": "_COMM",
    "exe": "_EXE",
    "machine_id": "_MACHINE_ID",
    "transport": "_TRANSPORT",
    "source_timestamp": "_SOURCE_REALTIME_TIMESTAMP",
}


def whole_entry(row):
    entry = {
        field: str(row[column])
        for column, field in FIELD_OF_COLUMN.items()
        if row.get(column) is not None
    }
    entry.update(json.loads(row["fields"]))
    return entry


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
                row["_entry"] = whole_entry(row)
                row["_file"] = os.path.relpath(path, root)
                row["_schema"] = schema
                print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1])
