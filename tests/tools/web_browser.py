#!/usr/bin/env python3
"""Drives the web console in a real browser (Debian's chromium and chromium-driver, headless,
through Selenium from PyPI) and checks what it shows against sources that are not the page:
the metrics files, the summary (read with DuckDB from PyPI), and the entry as journalctl printed
it. Saves a screenshot of each page. Prints one JSON line of what it found; exits 1 with the
reason on the first mismatch.

Usage: web_browser.py URL TOKEN METRICS_DIR STATE_DIR MARKER EXPECTED_JSON SCREENSHOT_DIR
"""
import json
import os
import sys
import tempfile
import time

import duckdb
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, token, metrics_dir, state_dir, marker, expected_path, shots = sys.argv[1:8]
expected = json.load(open(expected_path))
os.makedirs(shots, exist_ok=True)


def fail(why):
    print(json.dumps({"error": why}))
    sys.exit(1)


def prom(name):
    """The samples of a metrics file, without the journal_parquet_ prefix."""
    out = {}
    path = os.path.join(metrics_dir, name)
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        out[key.removeprefix("journal_parquet_")] = float(value)
    return out


def figure(v):
    """As the page prints a metric: JavaScript's String() of the number."""
    if v is None:
        return "—"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
profile = tempfile.mkdtemp(prefix="jp-chromium-")
for flag in [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}",
]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 30)
found = {}
try:
    # Without the token: the login page (401), and a wrong token is refused.
    driver.get(url + "/")
    wait.until(lambda d: d.find_elements(By.ID, "token"))
    driver.save_screenshot(os.path.join(shots, "login.png"))
    driver.find_element(By.ID, "token").send_keys("not-the-token-0000")
    driver.find_element(By.ID, "login").click()
    wait.until(lambda d: d.find_elements(By.ID, "login-error"))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()

    # Health: the figures are the metrics files' own.
    wait.until(lambda d: d.execute_script("return window.jpHealth !== undefined"))
    time.sleep(0.3)
    collector, flush = prom("journal_parquet_collector.prom"), prom("journal_parquet_flush.prom")
    checks = {
        "collector.entries_read_total": collector["entries_read_total"],
        "collector.entries_committed_total": collector["entries_committed_total"],
        "collector.entries_filtered_total": collector["entries_filtered_total"],
        "collector.gaps_total": collector["gaps_total"],
        "collector.buffer_bytes": collector["buffer_bytes"],
        "flush.runs_total": flush["flush_runs_total"],
        "flush.files_written_total": flush["parquet_files_written_total"],
        "flush.last_duration_seconds": flush["last_flush_duration_seconds"],
    }
    for path, want in checks.items():
        shown = driver.find_element(By.CSS_SELECTOR, f'[data-metric="{path}"]').text
        if shown != figure(want):
            fail(f"health shows {path} = {shown!r}, the metrics file {figure(want)!r}")
    found["health_figures"] = len(checks)
    driver.save_screenshot(os.path.join(shots, "health.png"))

    # Activity: every point of the chart is the summary's count for its bucket.
    driver.find_element(By.ID, "tab-activity").click()
    driver.find_element(By.CSS_SELECTOR, '.by[data-by="host"]').click()
    wait.until(lambda d: d.execute_script("return window.jpActivity && window.jpActivity.by === 'host'"))
    a = driver.execute_script("return window.jpActivity")
    conn = duckdb.connect(os.path.join(state_dir, "summary.duckdb"), read_only=True)
    start, step = a["buckets"][0] * 1_000_000, a["bucket_minutes"] * 60_000_000
    rows = conn.execute(
        "SELECT host, (epoch_us(minute) - ?) // ? AS b, sum(entries) FROM journal_minutes "
        "WHERE epoch_us(minute) >= ? AND epoch_us(minute) < ? GROUP BY ALL",
        [start, step, start, start + step * len(a["buckets"])],
    ).fetchall()
    conn.close()
    want = {}
    for host, b, n in rows:
        want.setdefault(host, [0] * len(a["buckets"]))[b] = n
    if a["series"] != want:
        fail(f"the chart's points differ from the summary: {sum(map(sum, want.values()))} entries "
             f"in the summary, {sum(map(sum, a['series'].values()))} charted")
    found["activity_entries"] = sum(map(sum, want.values()))
    time.sleep(0.5)
    driver.save_screenshot(os.path.join(shots, "activity.png"))

    # Search: the marker by text, opened, every field as journalctl printed it.
    driver.find_element(By.ID, "tab-search").click()
    driver.find_element(By.ID, "text").send_keys(marker)
    driver.find_element(By.ID, "search-go").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tr.entry"))
    hits = driver.find_elements(By.CSS_SELECTOR, "#results tr.entry")
    if len(hits) != 1:
        fail(f"searching for the marker found {len(hits)} entries")
    hits[0].click()
    wait.until(lambda d: d.find_element(By.ID, "entry").text.strip())
    shown = json.loads(driver.find_element(By.ID, "entry").text)
    if shown != expected:
        diff = {k for k in set(shown) | set(expected) if shown.get(k) != expected.get(k)}
        fail(f"the entry's fields differ from journalctl's: {sorted(diff)}")
    found["entry_fields"] = len(shown)
    driver.save_screenshot(os.path.join(shots, "search.png"))

    # SQL: a query over the archive, and one outside it refused.
    driver.find_element(By.ID, "tab-sql").click()
    box = driver.find_element(By.ID, "sql-text")
    box.clear()
    box.send_keys("SELECT count(*) AS n FROM journal")
    driver.find_element(By.ID, "sql-go").click()
    wait.until(lambda d: d.execute_script("return window.jpSql !== undefined"))
    found["sql_count"] = driver.execute_script("return window.jpSql.rows[0][0]")
    driver.save_screenshot(os.path.join(shots, "sql.png"))
    box.clear()
    box.send_keys("SELECT * FROM read_text('/etc/passwd')")
    driver.find_element(By.ID, "sql-go").click()
    wait.until(lambda d: d.find_element(By.ID, "sql-error").text)
    found["sql_refused"] = driver.find_element(By.ID, "sql-error").text.splitlines()[0]
finally:
    driver.quit()
print(json.dumps(found))
