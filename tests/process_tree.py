"""The live descendants of a process, read from /proc: what the supervision and limit tests check for orphans."""

from __future__ import annotations

import os


def process_tree(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid``: {pid: command line}."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            try:
                found[child] = open(f"/proc/{child}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            todo.append(child)
    return found
