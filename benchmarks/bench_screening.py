"""Benchmark: screen 100,000 generated names against the full UN SC
Consolidated List (../shared/reference). Prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_screening.py [--names 100000] [--xml PATH]

Two runs: realistic names (drawn from name lists, so many repeat, as consignee
and traveller names do; screening computes each distinct name once) and
all-distinct names (each gets a random suffix token: the worst case).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from data_contracts.loaders.un_sc import load_un_consolidated
from features.screening import DEFAULT_THRESHOLD, WatchlistIndex

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_XML = ROOT.parent / "shared" / "reference" / "un_sc_consolidated_2018-10-29.xml"

GIVEN = (
    "Aibek", "Nurlan", "Yerlan", "Daniyar", "Timur", "Rustam", "Farrukh", "Sherzod", "Jasur",
    "Dilshod", "Ulugbek", "Azamat", "Askar", "Dinara", "Gulnara", "Madina", "Aleksandr",
    "Dmitriy", "Sergey", "Mikhail", "Olga", "Irina", "Khalid", "Yusuf", "Omar", "Tariq",
    "Wei", "Fang", "Jing", "Ming", "Алексей", "Нурлан", "Жанибек", "Ғафур", "Бахтиёр",
)  # fmt: skip
FAMILY = (
    "Karimov", "Rakhimov", "Tursunov", "Yusupov", "Mirzaev", "Ergashev", "Sadykov", "Osmonov",
    "Asanov", "Nazarov", "Ivanov", "Smirnov", "Kuznetsov", "Popov", "Volkov", "Haddad",
    "Mansour", "Saleh", "Wang", "Li", "Zhang", "Chen", "Абдуллаев", "Каримова", "Қодиров",
)  # fmt: skip
COMPANY = ("LLC", "ТОО", "ООО", "MChJ", "", "", "", "")


def generate(n: int, seed: int, *, distinct: bool) -> list[str]:
    rng = random.Random(seed)
    names = []
    for i in range(n):
        name = f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"
        if rng.random() < 0.3:
            name += f" {rng.choice(GIVEN)}"
        if rng.random() < 0.15:
            name = f"{rng.choice(COMPANY)} {rng.choice(FAMILY)} Trans".strip()
        if distinct:
            name += f" {''.join(rng.choices('abcdefghijklmnoprstuvz', k=5))}{i}"
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--xml", type=Path, default=DEFAULT_XML)
    args = parser.parse_args()

    start = time.perf_counter()
    watchlist = load_un_consolidated(args.xml)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    index = WatchlistIndex.build(watchlist)
    build_s = time.perf_counter() - start
    print(f"cpus: {os.cpu_count()}")
    print(f"load UN list: {watchlist.height} entries in {load_s:.2f} s")
    print(
        f"build index: {index.size} names (+{len(index.initials_keys)} initial forms) "
        f"in {build_s:.2f} s"
    )
    for label, distinct in (("realistic", False), ("all distinct", True)):
        names = generate(args.names, seed=7, distinct=distinct)
        start = time.perf_counter()
        result = index.screen(names, threshold=DEFAULT_THRESHOLD)
        total = time.perf_counter() - start
        matched = result["query_index"].n_unique()
        print(
            f"screen {len(names):,} {label} names ({len(set(names)):,} distinct), "
            f"threshold {DEFAULT_THRESHOLD}: {total:.2f} s total, "
            f"{len(names) / total:,.0f} names/s, "
            f"{matched:,} names with a hit"
        )
    docs = [f"{random.Random(i).randrange(10**8, 10**9)}" for i in range(args.names)]
    start = time.perf_counter()
    hits = index.screen_documents(docs)
    total = time.perf_counter() - start
    print(f"screen {len(docs):,} document numbers: {total:.2f} s, {hits.height} hits")


if __name__ == "__main__":
    main()
