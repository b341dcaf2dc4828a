#!/usr/bin/env python3
"""Runs `tendril iomodels --quick` on a few fast models and checks the table it prints, the
Markdown report and the SVG chart it writes (well-formed XML, one line per model in each
panel, a legend naming every model); a paced run (--rate), where busy polling's CPU shows;
then bad input: an unknown model, a level above select's limit, a bad rate."""
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

MODELS = ["epoll-lt", "tendril-epoll", "select"]
LEVELS = [1, 10, 100, 1000]
SVG = "{http://www.w3.org/2000/svg}"


def expect(cond, what):
    if not cond:
        print("check_iomodels: " + what)
        sys.exit(1)


def rows_of(table):
    """The table's rows: model -> {connections: the row's words}."""
    lines = table.strip().splitlines()
    head = next((i for i, l in enumerate(lines) if l.startswith("model ")), None)
    expect(head is not None, "no table header in:\n" + table)
    expect(all(w in lines[head] for w in ("conns", "msgs/s", "p50 µs", "p99 µs", "p99.9 µs",
                                          "srv µs/msg", "srv CPU %", "threads", "RSS MiB")),
           "table header: " + lines[head])
    rows = {}
    for line in lines[head + 1:]:
        if not re.match(r"^\S+\s+\d+\s", line):
            break
        words = line.split()
        rows.setdefault(words[0], {})[int(words[1])] = words
    return rows


def main():
    tendril = sys.argv[1]
    # Descriptors the caller left open (a shell's, a test runner's) are inherited by the run;
    # its servers must not inherit them, or select could not serve its 1,020 connections.
    inherited = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
    for fd in inherited:
        os.set_inheritable(fd, True)
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([tendril, "iomodels", "--quick", "--out", out, "--models", ",".join(MODELS)],
                             capture_output=True, text=True, timeout=90, pass_fds=inherited)
        expect(run.returncode == 0, f"exit status {run.returncode}\n{run.stdout}\n{run.stderr}")
        progress = [l for l in run.stderr.splitlines() if re.match(r"^\[\d+/12\] ", l)]
        expect(len(progress) == 12, "progress lines: " + run.stderr)
        rows = rows_of(run.stdout)
        expect(sorted(rows) == sorted(MODELS), f"models in the table: {sorted(rows)}")
        for model in MODELS:
            expect(sorted(rows[model]) == LEVELS, f"{model}: levels {sorted(rows[model])}")
            for level, words in rows[model].items():
                # select serves up to 1,020 connections: every level here (its server gets no
                # descriptor but 0, 1, 2 and its listener from the run).
                rate = float(words[2].replace(",", ""))
                p50, p99, p999, cpu, cpu_pct = (float(w) for w in words[3:8])
                expect(rate > 0 and 0 < p50 <= p99 <= p999 and cpu > 0 and cpu_pct > 0,
                       f"{model} @ {level}: {' '.join(words)}")
                expect(int(words[9]) >= 1 and float(words[10]) > 0, f"{model} @ {level}: threads, RSS")
        md = open(os.path.join(out, "iomodels.md")).read()
        expect(md.startswith("# tendril iomodels"), "markdown title")
        expect("| CPU |" in md and "| kernel |" in md and "| date |" in md, "markdown: the machine")
        expect("| model | connections | messages/s |" in md, "markdown: table header")
        for model in MODELS:
            lines = [l for l in md.splitlines() if l.startswith(f"| {model} | ")]
            expect(len(lines) == len(LEVELS), f"markdown rows of {model}: {lines}")
        expect("](iomodels.svg)" in md, "markdown: the chart")
        root = ET.parse(os.path.join(out, "iomodels.svg")).getroot()
        expect(root.tag == SVG + "svg", f"svg root: {root.tag}")
        panels = [g for g in root.iter(SVG + "g") if g.get("class") == "panel"]
        expect(len(panels) == 2, f"{len(panels)} panels")
        for g in panels:
            lines = [p for p in g.iter(SVG + "polyline") if p.get("class") == "series"]
            expect(sorted(p.get("data-model") for p in lines) == sorted(MODELS),
                   f"panel {g.get('data-metric')}: lines {[p.get('data-model') for p in lines]}")
            for p in lines:
                expect(len(p.get("points").split()) == len(LEVELS),
                       f"{p.get('data-model')}: points {p.get('points')}")
        legend = [g for g in root.iter(SVG + "g") if g.get("class") == "legend"]
        expect(len(legend) == 1, "no legend")
        names = [t.text for t in legend[0].iter(SVG + "text")]
        expect(sorted(names) == sorted(MODELS), f"legend: {names}")

    # Paced: 2,000 messages per second offered over 10 connections. Every model keeps up, so
    # the rate is about what was offered (never much above it: the pacing caps it; the lower
    # bound is wide for a loaded machine), and the busy polling loop burns its CPU whether
    # messages come or not, where epoll sleeps between them.
    paced = subprocess.run([tendril, "iomodels", "--models", "nonblocking,epoll-lt", "--connections",
                            "10", "--rate", "2000", "--seconds", "0.6", "--warmup", "0.2"],
                           capture_output=True, text=True, timeout=60)
    rows = rows_of(paced.stdout) if paced.returncode == 0 else {}
    expect(sorted(rows) == ["epoll-lt", "nonblocking"],
           f"paced run: {paced.returncode}\n{paced.stdout}\n{paced.stderr}")
    rate = {m: float(rows[m][10][2].replace(",", "")) for m in rows}
    cpu_pct = {m: float(rows[m][10][7]) for m in rows}
    for m in rows:
        expect(500 <= rate[m] <= 2000 * 1.05 + 10 / 0.6, f"paced {m}: {rate[m]} msgs/s\n{paced.stdout}")
    expect(cpu_pct["nonblocking"] > 2 * cpu_pct["epoll-lt"],
           f"paced: busy polling {cpu_pct['nonblocking']}% of a CPU, epoll {cpu_pct['epoll-lt']}%\n{paced.stdout}")
    bad_rate = subprocess.run([tendril, "iomodels", "--models", "epoll-lt", "--rate", "-5"],
                              capture_output=True, text=True, timeout=30)
    expect(bad_rate.returncode != 0 and "bad value '-5' for --rate" in bad_rate.stderr,
           f"bad rate: {bad_rate.returncode} {bad_rate.stderr}")

    bad = subprocess.run([tendril, "iomodels", "--quick", "--models", "epoll-lt,no-such-model"],
                         capture_output=True, text=True, timeout=30)
    expect(bad.returncode != 0 and "unknown model 'no-such-model'" in bad.stderr
           and "epoll-lt" in bad.stderr, f"unknown model: {bad.returncode} {bad.stderr}")
    above = subprocess.run([tendril, "iomodels", "--models", "select", "--connections", "5000",
                            "--seconds", "0.2", "--warmup", "0"], capture_output=True, text=True,
                           timeout=30)
    expect(above.returncode == 0 and re.search(r"cannot serve: select is limited to \d+ connections",
                                                above.stdout),
           f"select @ 5000: {above.returncode}\n{above.stdout}\n{above.stderr}")
    # Bad input: a level above the descriptor limit is a row saying so, and the other levels
    # still run; a port in use is a clear error; one CPU runs without pinning and says so.
    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    fds = subprocess.run([tendril, "iomodels", "--models", "epoll-lt", "--connections", "1,1000",
                          "--seconds", "0.2", "--warmup", "0"], capture_output=True, text=True,
                         timeout=60, preexec_fn=low_fd_limit)
    rows = rows_of(fds.stdout) if fds.returncode == 0 else {}
    expect(fds.returncode == 0 and "epoll-lt" in rows and float(rows["epoll-lt"][1][2].replace(",", "")) > 0
           and re.search(r"cannot run: 1000 connections need more descriptors than RLIMIT_NOFILE "
                         r"allows \(200\)", fds.stdout),
           f"descriptor limit: {fds.returncode}\n{fds.stdout}\n{fds.stderr}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([tendril, "serve-model", "epoll-lt", "--port", str(port)],
                              capture_output=True, text=True, timeout=30)
        expect(busy.returncode != 0 and f"cannot bind 127.0.0.1:{port}: Address already in use"
               in busy.stderr, f"port in use: {busy.returncode} {busy.stderr}")
    if shutil.which("taskset"):
        one = subprocess.run(["taskset", "-c", "0", tendril, "iomodels", "--models", "epoll-lt",
                              "--connections", "1", "--seconds", "0.2", "--warmup", "0"],
                             capture_output=True, text=True, timeout=60)
        expect(one.returncode == 0 and "only one CPU available" in one.stderr
               and "epoll-lt" in rows_of(one.stdout), f"one CPU: {one.returncode}\n{one.stdout}\n{one.stderr}")
    listed = subprocess.run([tendril, "iomodels", "--list"], capture_output=True, text=True, timeout=30)
    expect(listed.returncode == 0 and all(m in listed.stdout for m in MODELS), "--list: " + listed.stdout)
    print("check_iomodels: ok")


if __name__ == "__main__":
    main()
