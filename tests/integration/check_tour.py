#!/usr/bin/env python3
"""Runs `tendril tour --quick` and checks each section's output, line by line and in order."""
import re
import subprocess
import sys


def sections(text):
    out = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^== (\d+)\. ", line)
        if m:
            current = int(m.group(1))
            out[current] = []
        elif current is not None and line.strip():
            out[current].append(line)
    return out


def expect(cond, what):
    if not cond:
        print("check_tour: " + what)
        sys.exit(1)


def main():
    run = subprocess.run([sys.argv[1], "tour", "--quick"], capture_output=True, text=True, timeout=120)
    expect(run.returncode == 0, f"exit status {run.returncode}\n{run.stderr}")
    s = sections(run.stdout)
    expect(s.get(1) == ["1", "2", "3", "4"], f"section 1: {s.get(1)}")
    pairs = []
    for n in (1, 2, 3):
        pairs += [f"[producer] producing {n}", f"[consumer] consuming {n}",
                  "[producer] consumer returned: 200 OK"]
    expect(s.get(2, [])[:9] == pairs, f"section 2: {s.get(2)}")
    expect(re.match(r"time taken: \d+\.\d{3} s", s[2][9]), f"section 2 time: {s[2][9:]}")
    expect(pairs == [l for l in s.get(3, []) if l.startswith("[")], f"section 3: {s.get(3)}")
    taken = float(re.search(r"time taken: (\d+\.\d+) s", "\n".join(s[3])).group(1))
    # 3 sleeps of 2 s scaled by 0.05: at least 0.3 s (the sleeps add up).
    expect(taken >= 0.29, f"section 3 took {taken} s, less than the sleeps it made")
    expect(s.get(4, [])[:4] == ["1", "2", "3", "4"], f"section 4: {s.get(4)}")
    s5 = s.get(5, [])
    expect("[Greenlet-1] sleeping 2 s" in s5 and "[Greenlet-2] sleeping 3 s" in s5, f"section 5: {s5}")
    expect(s5.index("[Greenlet-1] woke up after 2 s") < s5.index("[Greenlet-2] woke up after 3 s"),
           f"section 5 order: {s5}")
    expect("values: 2 and 3" in s5, f"section 5 values: {s5}")
    el = float(re.search(r"elapsed: (\d+\.\d+) s", "\n".join(s5)).group(1))
    # At least the longer sleep (3 s x 0.05); that they overlap is shown by the unit tests on
    # a paused clock, where it cannot be disturbed by a loaded machine.
    expect(el >= 0.149, f"section 5 elapsed {el}: shorter than the longest sleep")
    s6 = s.get(6, [])
    expect(any(l.startswith("server: one greenlet per connection on 127.0.0.1:") for l in s6), f"section 6: {s6}")
    got = [l for l in s6 if l.startswith("client")]
    expect(got == ["client sends: hello", "client got:   HELLO", "client sends: green threads",
                   "client got:   GREEN THREADS", "client: q (quits)"], f"section 6 client: {got}")
    expect(any(l.endswith(" connected") for l in s6) and any(l.endswith(" disconnected") for l in s6),
           f"section 6 server: {s6}")
    s7 = s.get(7, [])
    unpatched = float(re.search(r"unpatched elapsed: (\d+\.\d+) s", "\n".join(s7)).group(1))
    patched = float(re.search(r"^patched elapsed: (\d+\.\d+) s", "\n".join(s7), re.M).group(1))
    # Unpatched, the libc sleeps add up (2 + 3 s, x0.05); patched, at least the longer one.
    expect(unpatched >= 0.249, f"section 7: unpatched {unpatched} s is less than the sleeps added up")
    expect(patched >= 0.149, f"section 7: patched {patched} s is less than the longest sleep")
    before = s7[:s7.index("after patch_all(): a libc sleep parks only the greenlet that calls it")]
    after = s7[len(before):]
    # Unpatched, each greenlet runs its sleep to the end before the other starts; patched, both
    # have started before either is back.
    expect([l for l in before if l.startswith("[")] ==
           ["[Greenlet-6] libc usleep(2)", "[Greenlet-6] back from usleep(2)",
            "[Greenlet-7] libc usleep(3)", "[Greenlet-7] back from usleep(3)"], f"section 7 unpatched: {s7}")
    expect([l for l in after if l.startswith("[")] ==
           ["[Greenlet-8] libc usleep(2)", "[Greenlet-9] libc usleep(3)",
            "[Greenlet-8] back from usleep(2)", "[Greenlet-9] back from usleep(3)"], f"section 7 patched: {s7}")
    s8 = s.get(8, [])
    gets = [l for l in s8 if l.startswith("GET: ")]
    done = [l for l in s8 if re.match(r"^http://127\.0\.0\.1:\d+/\w+: 200, \d+ bytes$", l)]
    expect(len(gets) == 5 and len(done) == 5, f"section 8: {s8}")
    # Every fetch starts before the first one ends: they run at the same time.
    expect(max(s8.index(l) for l in gets) < min(s8.index(l) for l in done), f"section 8 order: {s8}")
    expect(any(l.startswith("5 of 5 fetched in ") for l in s8), f"section 8 summary: {s8}")
    # Section 9: the blocking client waits for the delayed reply (2 s scaled by --quick: 0.10 s),
    # then the non-blocking server answers at once.
    s9 = s.get(9, [])
    waits = [float(m.group(2)) for l in s9
             if (m := re.match(r'^client: got "(HELLO|HELLO AGAIN)" at [\d:.]+ \((\d+\.\d+) s later\)$', l))]
    expect(len(waits) == 2, f"section 9 replies: {s9}")
    expect(s9.index(next(l for l in s9 if l.startswith('client: sends "hello" at'))) <
           s9.index(next(l for l in s9 if l.startswith('server: got "hello"'))), f"section 9 order: {s9}")
    expect(waits[0] >= 0.099, f"section 9: the delayed reply came after {waits[0]} s")
    expect(waits[1] < 1.0, f"section 9: the non-blocking server took {waits[1]} s to answer")
    expect("end of the tour" in run.stdout, "the tour did not reach its end")
    print("check_tour: ok")


if __name__ == "__main__":
    main()
