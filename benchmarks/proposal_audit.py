"""What the LLM said in a comparison run: its replies, scored against the world spec, without training.

    python -m benchmarks.proposal_audit --replay benchmarks/results/household/llm_replay
    python -m benchmarks.proposal_audit --replay runs/bench-household/llm_replay --world household

Reads the LLM replay caches a comparison wrote (one ``<method>_seed<k>.jsonl`` per search, every
reply the searcher received, re-asks included) and, per method, scores each reply's class set and,
where the small prompt's JSON reply has them, the objects of its own ``uses`` pairs
(action -> object) against the world's action objects. It answers "why does ICRL miss?" from the
logged proposals: does the model not know the objects, or does it know them and leave them out?

Columns: replies read; recall of the world's action objects (mean per reply) in the ``classes``
and in the ``uses`` objects; the share of class texts that name nothing in the world (their maps
are empty); the share of replies whose classes hold none of their own ``uses`` objects. The world
spec is used here only, after the fact; no searcher sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from a2o.data.synth.spec import normalise_name
from benchmarks._common import format_table
from benchmarks.llm_agent import World
from searchers.parsing import parse_reply, reply_json

_FILE = re.compile(r"(?P<method>.+)_seed(?P<seed>\d+)\.jsonl$")


def reply_texts(path: str) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted run
            if isinstance(entry, dict) and isinstance(entry.get("text"), str):
                texts.append(entry["text"])
    return texts


def score_reply(text: str, world: World, max_classes: int) -> dict[str, Any]:
    """One reply: its accepted classes and its ``uses`` objects, matched against the world."""
    classes = list(parse_reply(text, action_names=world.action_names, max_classes=max_classes).class_set)
    data = reply_json(text)
    uses_raw = data.get("uses") if isinstance(data, dict) else None
    uses = []
    if isinstance(uses_raw, list):
        objects = [str(u.get("object")) for u in uses_raw if isinstance(u, dict) and isinstance(u.get("object"), str)]
        uses = list(parse_reply(json.dumps({"classes": objects}), action_names=world.action_names,
                                max_classes=len(world.action_names) or 1).class_set)
    n = len(world.objects)
    return {
        "classes": classes,
        "uses": uses,
        "recall_classes": len(world.matched(classes)) / n,
        "recall_uses": len(world.matched(uses)) / n if uses_raw is not None else None,
        "unknown_classes": sum(1 for c in classes if normalise_name(c) not in world.things),
        "num_classes": len(classes),
        "classes_share_uses": bool(set(classes) & set(uses)) if uses_raw is not None else None,
    }


def audit(replay_dir: str, world: World, max_classes: int = 8) -> list[dict[str, Any]]:
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seeds: dict[str, set[int]] = defaultdict(set)
    for name in sorted(os.listdir(replay_dir)):
        match = _FILE.match(name)
        if not match:
            continue
        for text in reply_texts(os.path.join(replay_dir, name)):
            by_method[match["method"]].append(score_reply(text, world, max_classes))
        seeds[match["method"]].add(int(match["seed"]))
    rows = []
    for method, scored in sorted(by_method.items()):
        with_uses = [s for s in scored if s["recall_uses"] is not None]
        classes_total = sum(s["num_classes"] for s in scored)
        rows.append({
            "method": method,
            "seeds": sorted(seeds[method]),
            "replies": len(scored),
            "recall_classes": statistics.fmean(s["recall_classes"] for s in scored) if scored else None,
            "recall_uses": statistics.fmean(s["recall_uses"] for s in with_uses) if with_uses else None,
            "unknown_share": sum(s["unknown_classes"] for s in scored) / classes_total if classes_total else None,
            "no_own_uses_share": (sum(1 for s in with_uses if not s["classes_share_uses"]) / len(with_uses)
                                  if with_uses else None),
        })
    return rows


def table(rows: Sequence[dict[str, Any]], num_objects: int) -> str:
    def share(value):
        return "–" if value is None else f"{value:.2f}"

    return format_table(
        ["method", "seeds", "replies", f"recall in classes (of {num_objects})", "recall in uses",
         "classes naming nothing in the world", "replies whose classes skip their own uses"],
        [[r["method"], ",".join(map(str, r["seeds"])), r["replies"], share(r["recall_classes"]),
          share(r["recall_uses"]), share(r["unknown_share"]), share(r["no_own_uses_share"])] for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay", default="benchmarks/results/household/llm_replay",
                        help="a comparison's LLM replay folder (<method>_seed<k>.jsonl files)")
    parser.add_argument("--world", default="household", help="world preset or spec file the run used")
    parser.add_argument("--max-classes", type=int, default=8, help="C_max of the run")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.replay):
        parser.error(f"{args.replay} is not a folder; pass a comparison's llm_replay folder with --replay")
    world = World.load(args.world)
    rows = audit(args.replay, world, args.max_classes)
    if not rows:
        parser.error(f"no <method>_seed<k>.jsonl replay files in {args.replay}")
    print(table(rows, len(world.objects)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
