#!/usr/bin/env python3
"""The tendril command's own surface: `tendril help` lists the commands, `tendril COMMAND
--help` (and `tendril help COMMAND`) prints that command's usage and succeeds without running
it, an unknown command or option, or a missing or bad value, says what was wrong and exits 2,
`tendril version` prints the version."""
import os
import re
import subprocess
import sys


def expect(cond, what):
    if not cond:
        print("check_command: " + what)
        sys.exit(1)


def run(*args, seconds=30):
    try:
        return subprocess.run([TENDRIL, *args], capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        expect(False, f"{' '.join(args)}: still running after {seconds} s")


def main():
    listing = run("help")
    expect(listing.returncode == 0, f"help: {listing.returncode} {listing.stderr}")
    names = re.findall(r"^  (\S+)", listing.stdout, re.M)
    for name in ("tour", "echo-server", "echo-client", "crawl", "iomodels", "load", "run", "version"):
        expect(name in names, f"help lists no '{name}': {listing.stdout}")
    expect("serve-model" not in names, "help lists the hidden serve-model")
    for name in ("echo-server", "echo-client"):
        expect(f"  {name} [--host H] [--port P] " in listing.stdout, f"help: {name}'s --host")
    for flag in ("--help", "-h"):
        same = run(flag)
        expect(same.returncode == 0 and same.stdout == listing.stdout, f"tendril {flag}: {same.stdout}")
    for name in ("tour", "iomodels", "load", "echo-server", "crawl"):
        for form in ((name, "--help"), (name, "-h"), ("help", name)):
            r = run(*form)
            # The usage only: a tour or an echo server started here would not end.
            expect(r.returncode == 0 and r.stdout.startswith(f"usage: tendril {name}"),
                   f"{' '.join(form)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    expect("--rate" in run("load", "--help").stdout, "load --help does not name --rate")
    # The tour's summary named its first four parts only.
    tour = run("help", "tour").stdout
    for part in ("generators", "greenlets", "gevent", "sockets", "monkey", "crawler", "I/O models"):
        expect(part in tour, f"help tour does not name its '{part}' part: {tour}")
    unknown = run("no-such-command")
    expect(unknown.returncode == 2 and "unknown command 'no-such-command'" in unknown.stderr,
           f"unknown command: {unknown.returncode} {unknown.stderr}")
    unknown = run("help", "no-such-command")
    expect(unknown.returncode == 2 and "unknown command 'no-such-command'" in unknown.stderr,
           f"help of an unknown command: {unknown.returncode} {unknown.stderr}")
    bad = run("load", "--port", "1", "--bogus")
    expect(bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr
           and "tendril load --port P" in bad.stderr, f"unknown option: {bad.returncode} {bad.stderr}")
    version = run("version")
    expect(version.returncode == 0 and re.match(r"^tendril \d+\.\d+\.\d+", version.stdout),
           f"version: {version.stdout}")
    # Values that were taken for something else: an empty port was port 0 (the server started
    # on a free port), an empty --out no report at all, and version ignored what followed it.
    for form, message in ((("echo-server", "--port", ""), "bad value '' for --port"),
                          (("echo-client", "--port", ""), "bad value '' for --port"),
                          (("iomodels", "--out", "", "--bogus"), "--out needs a folder name"),
                          (("version", "extra"), "unknown argument 'extra' (tendril version)")):
        bad = run(*form, seconds=10)
        expect(bad.returncode == 2 and message in bad.stderr,
               f"{' '.join(form)}: {bad.returncode} {bad.stdout} {bad.stderr}")
    # A wrong command line exits 2, as an unknown command does (1 is a failure while running:
    # every one of these exited 1). A missing value was called an unknown argument or option.
    for form, message in ((("tour", "--bogus"), "unknown option '--bogus' (tendril tour"),
                          (("echo-server", "--port"), "--port needs a value (tendril echo-server"),
                          (("echo-client", "--host"), "--host needs a value (tendril echo-client"),
                          (("crawl", "--timeout"), "--timeout needs a value (tendril crawl"),
                          (("crawl", "--timeout", "x"), "--timeout wants seconds"),
                          (("iomodels", "--seconds"), "--seconds needs a value"),
                          (("load", "--port", "0"), "bad value '0' for --port"),
                          (("help", "tour", "crawl"), "unknown argument 'crawl' (tendril help")):
        bad = run(*form, seconds=10)
        expect(bad.returncode == 2 and message in bad.stderr,
               f"{' '.join(form)}: {bad.returncode} {bad.stdout} {bad.stderr}")
    # --help anywhere among a command's arguments is its usage (it was an unknown option).
    for form in (("crawl", "https://example.invalid/", "--help"), ("tour", "--quick", "--help"),
                 ("echo-server", "--port", "0", "-h")):
        r = run(*form, seconds=10)
        expect(r.returncode == 0 and r.stdout.startswith(f"usage: tendril {form[0]}"),
               f"{' '.join(form)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    check_run()
    print("check_command: ok")


def check_run():
    """`tendril run`'s own failures. Its status came from errno read after the message was
    written, which may change it (127 became 126 with stderr on /dev/full), and an unreadable
    TENDRIL_PRELOAD was reported as paths never looked at, without its value."""
    env = dict(os.environ, TENDRIL_PRELOAD=TENDRIL)  # readable: never loaded, no exec succeeds
    with open("/dev/full", "w") as full:
        for stderr in (subprocess.PIPE, full):
            r = subprocess.run([TENDRIL, "run", "--", "/nonexistent/program"], env=env,
                               stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=30)
            expect(r.returncode == 127, f"run of a missing program: {r.returncode} {r.stderr}")
    env["TENDRIL_PRELOAD"] = "/nonexistent/libx.so"
    r = subprocess.run([TENDRIL, "run", "--", "true"], env=env, capture_output=True, text=True,
                       timeout=30)
    expect(r.returncode == 2 and "TENDRIL_PRELOAD" in r.stderr and "/nonexistent/libx.so" in r.stderr
           and "No such file" in r.stderr, f"run with a bad TENDRIL_PRELOAD: {r.returncode} {r.stderr}")


if __name__ == "__main__":
    TENDRIL = sys.argv[1]
    main()
