#!/usr/bin/env python3
"""Runs `tendril crawl`: the local slow server's five pages fetched at once (each answers after
1 s: all five in well under the 5 s they would take one by one), a refused URL reported as a
failure with exit status 1, a timeout under 1 ms that still limits each fetch, and a bad option
refused with a message."""
import re
import subprocess
import sys


def expect(cond, what):
    if not cond:
        print("check_crawl: " + what)
        sys.exit(1)


def main():
    tendril = sys.argv[1]
    run = subprocess.run([tendril, "crawl"], capture_output=True, text=True, timeout=60)
    expect(run.returncode == 0, f"crawl: exit status {run.returncode}\n{run.stdout}{run.stderr}")
    lines = run.stdout.splitlines()
    gets = [l for l in lines if l.startswith("GET: ")]
    done = [l for l in lines if re.match(r"^http://127\.0\.0\.1:\d+/\w+: 200, \d+ bytes$", l)]
    expect(len(gets) == 5 and len(done) == 5, f"crawl output: {lines}")
    expect(max(lines.index(l) for l in gets) < min(lines.index(l) for l in done), f"crawl order: {lines}")
    took = float(re.search(r"^5 URLs in (\d+\.\d+) s \(0 failed\)$", run.stdout, re.M).group(1))
    expect(1.0 <= took < 4.5, f"crawl took {took} s: not concurrent (5 pages of 1 s each)")

    run = subprocess.run([tendril, "crawl", "http://127.0.0.1:1/"], capture_output=True, text=True, timeout=60)
    expect(run.returncode == 1, f"refused URL: exit status {run.returncode}")
    expect(re.search(r"^http://127\.0\.0\.1:1/: failed: ", run.stdout, re.M), f"refused URL: {run.stdout}")
    expect("1 URLs in " in run.stdout and "(1 failed)" in run.stdout, f"refused URL summary: {run.stdout}")

    # A timeout under 1 ms was cut to 0 ms, which libcurl takes as no limit: the pages, 1 s
    # late, came back. Now each fetch fails, well before the page would answer.
    run = subprocess.run([tendril, "crawl", "--timeout", "0.0005"], capture_output=True, text=True,
                         timeout=60)
    expect(run.returncode == 1 and "(5 failed)" in run.stdout, f"--timeout 0.0005: {run.stdout}")
    expect(len(re.findall(r"^http://127\.0\.0\.1:\d+/\w+: failed: ", run.stdout, re.M)) == 5,
           f"--timeout 0.0005: {run.stdout}")

    run = subprocess.run([tendril, "crawl", "--timeout", "zero"], capture_output=True, text=True, timeout=60)
    expect(run.returncode == 2 and "--timeout wants seconds" in run.stderr, f"bad option: {run.stderr}")
    print("check_crawl: ok")


if __name__ == "__main__":
    main()
