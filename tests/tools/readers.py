#!/usr/bin/env python3
"""Reads a journal-parquet tree with six engines that are not ours (pyarrow, Polars, DuckDB,
DataFusion, chDB, Spark) and registers its files, unchanged, into an Iceberg table (pyiceberg's
add_files, SQL catalog on SQLite), scanning it back. Each prints, as one JSON line:

  {"reader": NAME, "rows": N, "per_host": {HOSTNAME: N}, "message_hits": N, "fields_hits": N}

`message_hits` counts rows whose `message` contains NEEDLE_MESSAGE, `fields_hits` rows whose
`fields` text contains NEEDLE_FIELDS, with each engine's own LIKE / contains on the columns as
they are read. A reader that fails prints {"reader": NAME, "error": "..."}; the test decides.

Usage: readers.py DATA NEEDLE_MESSAGE NEEDLE_FIELDS [READER...]

Spark reads the directory the way Spark users do (recursiveFileLookup), which skips paths that
start with `_` or `.`: the escaped host directories must not.
"""
import glob
import json
import os
import sys
import tempfile
import traceback


def minute_files(data):
    pattern = os.path.join(data, "*", "[0-9]" * 4, "[0-9]" * 2, "[0-9]" * 2, "*.parquet")
    return sorted(glob.glob(pattern))


def like(needle):
    return "%" + needle.replace("'", "''") + "%"


def sql_result(rows, per_host, message_hits, fields_hits):
    return {
        "rows": int(rows),
        "per_host": {("" if h is None else h): int(n) for h, n in per_host},
        "message_hits": int(message_hits),
        "fields_hits": int(fields_hits),
    }


def arrow_answers(table, m, f):
    import pyarrow.compute as pc

    per_host = table.group_by("hostname").aggregate([([], "count_all")])
    return sql_result(
        table.num_rows,
        zip(per_host["hostname"].to_pylist(), per_host["count_all"].to_pylist()),
        pc.sum(pc.match_substring(table["message"], m)).as_py() or 0,
        pc.sum(pc.match_substring(table["fields"], f)).as_py() or 0,
    )


def read_pyarrow(data, files, m, f):
    import pyarrow.dataset as ds

    return arrow_answers(ds.dataset(files, format="parquet").to_table(), m, f)


def read_polars(data, files, m, f):
    import polars as pl

    frame = pl.scan_parquet(files)
    per_host = frame.group_by("hostname").len().collect()
    counts = frame.select(
        pl.len().alias("rows"),
        pl.col("message").str.contains(m, literal=True).sum().alias("m"),
        pl.col("fields").str.contains(f, literal=True).sum().alias("f"),
    ).collect()
    return sql_result(
        counts["rows"][0],
        zip(per_host["hostname"].to_list(), per_host["len"].to_list()),
        counts["m"][0],
        counts["f"][0],
    )


def read_duckdb(data, files, m, f):
    import duckdb

    con = duckdb.connect()
    listed = ", ".join("'" + p.replace("'", "''") + "'" for p in files)
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
    return run_sql(lambda q: con.execute(q).fetchall(), "t", m, f)


def run_sql(query, table, m, f):
    rows = query(f"SELECT count(*) FROM {table}")[0][0]
    per_host = query(f"SELECT hostname, count(*) FROM {table} GROUP BY hostname")
    mh = query(f"SELECT count(*) FROM {table} WHERE message LIKE '{like(m)}'")[0][0]
    fh = query(f"SELECT count(*) FROM {table} WHERE fields LIKE '{like(f)}'")[0][0]
    return sql_result(rows, per_host, mh, fh)


def read_datafusion(data, files, m, f):
    from datafusion import SessionConfig, SessionContext

    # DataFusion reads only a directory's own files unless told to descend (Hive's habit).
    config = SessionConfig().set("datafusion.execution.listing_table_ignore_subdirectory", "false")
    ctx = SessionContext(config)
    ctx.register_parquet("t", data + "/", file_extension=".parquet")
    query = lambda q: [tuple(r.values()) for r in ctx.sql(q).to_pylist()]
    return run_sql(query, "t", m, f)


def read_chdb(data, files, m, f):
    import chdb

    source = f"file('{data}/*/*/*/*/*.parquet', Parquet)"

    def query(q):
        out = chdb.query(q.replace("FROM t", f"FROM {source}"), "JSONCompact")
        return [tuple(r) for r in json.loads(out.bytes())["data"]]

    result = run_sql(query, "t", m, f)
    return result


def read_spark(data, files, m, f):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        # pathGlobFilter: DATA also holds journal.duckdb (the catalogue), and damaged files set
        # aside as NAME.parquet.damaged-UNIXTIME.
        spark.read.option("recursiveFileLookup", "true").option(
            "pathGlobFilter", "*.parquet"
        ).parquet(data).createOrReplaceTempView("t")
        query = lambda q: [tuple(r) for r in spark.sql(q).collect()]
        return run_sql(query, "t", m, f)
    finally:
        spark.stop()


def read_iceberg(data, files, m, f):
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    with tempfile.TemporaryDirectory(prefix="jp-iceberg-") as warehouse:
        catalog = SqlCatalog(
            "jp",
            uri=f"sqlite:///{warehouse}/catalog.db",
            warehouse=f"file://{warehouse}",
        )
        catalog.create_namespace("archive")
        table = catalog.create_table("archive.journal", schema=pq.read_schema(files[0]))
        table.add_files(file_paths=files)
        return arrow_answers(table.scan().to_arrow(), m, f)


READERS = {
    "pyarrow": read_pyarrow,
    "polars": read_polars,
    "duckdb": read_duckdb,
    "datafusion": read_datafusion,
    "chdb": read_chdb,
    "spark": read_spark,
    "iceberg": read_iceberg,
}


def main():
    data, m, f = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    names = sys.argv[4:] or list(READERS)
    files = minute_files(data)
    for name in names:
        try:
            result = {"reader": name, **READERS[name](data, files, m, f)}
        except Exception as e:  # the test reports which reader failed and why
            traceback.print_exc()
            result = {"reader": name, "error": f"{type(e).__name__}: {e}"[:2000]}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
