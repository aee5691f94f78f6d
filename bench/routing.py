"""Routing decision time with 10,000 rules over a 3,000-node jurisdiction tree.

Pure CPU, in this process. The tree: one province, 50 cities, 2,949 counties (valid GB/T 2260
shaped codes), six units per jurisdiction (bureau, government, land, labour, housing, discipline
inspection) with superiors one level up. The rules: about 2% at province level, 18% at city level,
80% at county level; categories, subjects and keywords vary, so buckets hold a few rules each and
the province/city ones are shared by many petitions (the realistic worst case for the index).

Baseline (same run): the same decision made the obvious way, every rule checked with
`RoutingRule.matches` and the matches sorted by `rank_key` (no index).
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Any

from petitions.domain.directory import Directory
from petitions.domain.routing import PetitionFacts, Router, RoutingRule, RuleSet

KINDS = ("bureau", "gov", "land", "hr", "housing", "di")
KIND_OF = {"bureau": "bureau", "gov": "government", "di": "discipline_inspection"}
SUBJECTS = ("land", "labour", "housing", "demolition", "consumer", "pension", "traffic")
CATEGORIES = ("appeal", "suggestion", "accusation")
KEYWORDS = ("征地", "补偿", "工资", "拖欠", "宅基地", "拆迁", "物业", "社保", "噪音", "医疗")


def jurisdiction_codes(n_cities: int = 50, n_nodes: int = 3000) -> dict[str, str | None]:
    province = "330000"
    parents: dict[str, str | None] = {province: None}
    cities = [f"33{c:02d}00" for c in range(1, n_cities + 1)]
    for city in cities:
        parents[city] = province
    county = 0
    while len(parents) < n_nodes:
        city = cities[county % n_cities]
        parents[f"{city[:4]}{county // n_cities + 1:02d}"] = city
        county += 1
    return parents


def directory_dict(parents: dict[str, str | None]) -> dict[str, Any]:
    jurisdictions = [{"code": c, "name": f"J{c}", "parent": p, "bureau_unit_id": f"bureau-{c}"}
                     for c, p in parents.items()]
    units = []
    for code, parent in parents.items():
        for k in KINDS:
            units.append({
                "id": f"{k}-{code}", "name": f"{k.upper()} of {code}", "jurisdiction": code,
                "kind": KIND_OF.get(k, "department"), "categories": [], "subjects": [],
                "superior": f"{k}-{parent}" if parent else None, "webhook": "",
                "discipline_body": (f"di-{parent}" if parent else None) if k == "di"
                else f"di-{code}",
            })
    return {"jurisdictions": jurisdictions, "units": units}


def synthetic_rules(parents: dict[str, str | None], n_rules: int, rng: random.Random
                    ) -> list[RoutingRule]:
    codes = list(parents)
    cities = [c for c, p in parents.items() if p == "330000"]
    counties = [c for c in codes if not c.endswith("00")]
    rules = [RoutingRule("fallback", None, "330000", None, (), "bureau-330000")]
    for i in range(n_rules - 1):
        x = rng.random()
        division = ("330000" if x < 0.02 else rng.choice(cities) if x < 0.20
                    else rng.choice(counties))
        kind = rng.choice(("land", "hr", "housing", "gov", "bureau"))
        rules.append(RoutingRule(
            id=f"r{i}",
            category=rng.choice((*CATEGORIES, None)),
            division=division,
            subject=rng.choice((*SUBJECTS, None)),
            keywords=tuple(rng.sample(KEYWORDS, rng.choice((0, 0, 1, 2)))),
            lead_unit=f"{kind}-{division}",
            assisting_units=(f"bureau-{division}",) if kind != "bureau" and rng.random() < 0.3
            else (),
            priority=rng.randint(0, 5),
        ))
    return rules


def random_facts(parents: dict[str, str | None], n: int, rng: random.Random) -> list[PetitionFacts]:
    counties = [c for c in parents if not c.endswith("00")]
    facts = []
    for _ in range(n):
        words = "，".join(rng.sample(KEYWORDS, rng.choice((0, 1, 2))))
        facts.append(PetitionFacts(
            category=rng.choice(("appeal", "appeal", "suggestion")),
            division=rng.choice(counties),
            subject=rng.choice(SUBJECTS),
            content=f"关于{words}的问题，多次反映未解决，请求处理。" * 3,
        ))
    return facts


def naive_decision(rules: list[RoutingRule], facts: PetitionFacts) -> RoutingRule | None:
    matching = [r for r in rules if r.matches(facts)]
    matching.sort(key=lambda r: r.rank_key(facts))
    return matching[0] if matching else None


def run(n_rules: int = 10_000, n_nodes: int = 3000, decisions: int = 20_000,
        naive_decisions: int = 200, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    parents = jurisdiction_codes(n_nodes=n_nodes)
    t0 = time.perf_counter()
    directory = Directory.from_dict(directory_dict(parents))
    rules = synthetic_rules(parents, n_rules, rng)
    router = Router(RuleSet("bench", tuple(rules)), directory)
    build_s = time.perf_counter() - t0
    facts = random_facts(parents, decisions, rng)

    for f in facts[:500]:  # warm-up
        router.decide(f)
    times = []
    perf = time.perf_counter_ns
    outcomes: dict[str, int] = {}
    for f in facts:
        t = perf()
        d = router.decide(f)
        times.append(perf() - t)
        outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
    times.sort()

    naive = []
    agree = 0
    for f in facts[:naive_decisions]:
        t = perf()
        best = naive_decision(rules, f)
        naive.append(perf() - t)
        top = router.matching_rules(f)
        agree += (best is None and not top) or (bool(top) and best is top[0])
    naive.sort()
    return {
        "jurisdictions": len(directory), "units": len(directory.units), "rules": len(rules),
        "build_s": round(build_s, 2), "decisions": len(times),
        "median_ms": statistics.median(times) / 1e6,
        "p99_ms": times[int(0.99 * (len(times) - 1))] / 1e6,
        "naive_median_ms": statistics.median(naive) / 1e6,
        "naive_decisions": len(naive), "naive_agrees": agree, "outcomes": outcomes,
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
