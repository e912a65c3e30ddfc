"""Summarise py-spy's folded stacks (``py-spy record -f raw``): where the samples went.

    python -m bench.folded profile.txt [--top 25] [--under FUNCTION] [--self]

Inclusive share: samples whose stack contains the function (counted once per stack),
over all samples (or over the samples under ``--under``). Line numbers are dropped,
so a function is one row however many of its lines were sampled.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r" \(([^()]*?):\d+\)$")


def _frame_name(frame: str) -> str:
    match = _LINE.search(frame)
    if not match:
        return frame.strip()
    path = match.group(1)
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{frame[: match.start()]} ({path})"


def read(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            stacks.append(([_frame_name(frame) for frame in stack.split(";")], int(count)))
    return stacks


def summarise(stacks, top: int, under: str | None, self_only: bool) -> list[tuple[str, float, int]]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        if under is not None:
            indices = [i for i, frame in enumerate(frames) if under in frame]
            if not indices:
                continue
            frames = frames[indices[0]:]
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    table = own if self_only else inclusive
    return [(name, 100 * samples / total, samples) for name, samples in table.most_common(top)] if total else []


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.folded")
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under")
    parser.add_argument("--self", dest="self_only", action="store_true")
    args = parser.parse_args()
    for name, share, samples in summarise(read(args.path), args.top, args.under, args.self_only):
        print(f"{share:6.1f}%  {samples:8d}  {name}")


if __name__ == "__main__":
    main()
