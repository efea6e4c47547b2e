#!/usr/bin/python3
"""What a copy-on-write page fault costs on this host: a parent dirties N
pages, forks, and the child writes one byte to each (every write copies a
page it shares with the parent); the same child writes to N pages it has
not touched before (every write faults in a new zero page) for comparison.

    python3 bench/cow_faults.py [--pages 500] [--rounds 20]

A forked Python run pays this for every page of the zygote's it writes to
(reference counts write to every object it uses): bench/README.md has the
numbers. Standard library only; never asserts on timing.
"""
import argparse
import mmap
import os
import time

PAGE = mmap.PAGESIZE


def child_writes(buf, pages, stride):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        t = time.perf_counter()
        for i in range(pages):
            buf[i * stride] = 2
        os.write(w, str(time.perf_counter() - t).encode())
        os._exit(0)
    os.close(w)
    took = float(os.read(r, 64))
    os.close(r)
    os.waitpid(pid, 0)
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    stride = PAGE * 4  # scattered, as an interpreter's objects are
    shared = mmap.mmap(-1, a.pages * stride)
    for i in range(0, a.pages * stride, PAGE):
        shared[i] = 1  # dirty: the child's writes copy
    fresh = mmap.mmap(-1, a.pages * stride)  # untouched: zero pages
    for name, buf in (("copy-on-write", shared), ("new page", fresh)):
        times = sorted(child_writes(buf, a.pages, stride)
                       for _ in range(a.rounds))
        med = times[len(times) // 2]
        print("%-14s %d pages: %.2f ms, %.1f us a page (median of %d)"
              % (name, a.pages, med * 1e3, med * 1e6 / a.pages, a.rounds))


if __name__ == "__main__":
    main()
