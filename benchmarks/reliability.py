"""Resume and faults as a cluster user meets them: four scenarios through `a2o search` itself.

    python -m benchmarks.reliability                       # all four, prints the table
    python -m benchmarks.reliability --scenarios bucket,node --llm fake
    python -m benchmarks.reliability --readme README.md     # also rewrite the README's block

Scenarios (each a tiny search on the A2O-Synth ``tiny`` world, run as the product's CLI in its own
processes, so Ray, Tune, Train, Data and the map cache are the real ones):

- ``resume``: ICRL with the embedded LLM (``--llm fake``: a scripted OpenAI-compatible server) is
  interrupted with SIGINT (Ctrl-C) after its first trial, then ``--resume`` finishes it; the LLM
  endpoint of the resumed run is a new one (a fresh embedded server, a new port).
- ``bucket``: the same with ``storage.root=s3://…`` on an S3 server on loopback (moto), and the
  resume runs in a fresh working directory with a fresh temp dir: the bucket alone carries the run.
- ``node``: a 2-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: one head and one
  worker node, each its own raylet) shares the bucket; two trials run at once, so at least one
  needs the worker node; once a Ray Train worker runs there, the worker node is killed (raylet and
  its workers, no graceful shutdown) and a fresh node joins.
- ``shared``: two searches at once on one map cache (``storage.maps_root`` in the bucket) with
  overlapping vocabularies.

Counts: trials planned / run (finished with a val accuracy) / repeated (a class set trained twice)
/ lost (planned and never finished); fallbacks (LLM proposals that came from the fallback); maps
computed / reused (summed over the finished trials' map-cache counters) and, on S3 with bucket
versioning, *writes per map entry* (every stored version of every entry: 1 means no (video, class)
was computed twice, whichever process did it, including a trial that was killed); corrupt entries
(data whose sha256 differs from its marker); wall time of the whole scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

SCENARIOS = ("resume", "bucket", "node", "shared")
TITLES = {
    "resume": "interrupt + resume, embedded LLM",
    "bucket": "resume from the bucket (fresh dir)",
    "node": "worker node killed mid-trial",
    "shared": "two searches sharing the cache",
}
VOCABULARY = ["ball", "hand", "box", "cup", "floor", "lid", "spoon", "mop"]


@dataclass
class ScenarioResult:
    scenario: str
    planned: int = 0
    run: int = 0
    repeated: int = 0
    lost: int = 0
    fallbacks: int = 0
    proposals: int = 0
    maps_computed: int = 0
    maps_reused: int = 0
    map_entries: int | None = None  # entries in the cache after the scenario
    max_writes_per_entry: int | None = None  # stored versions of the most-written entry (S3 only)
    corrupt_entries: int | None = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    trials: list[dict] = field(default_factory=list)  # class set, source and counters per trial


# ---------------------------------------------------------------------------------------------
# configs and processes


def tiny_config(work: Path, *, storage_root: str, data_root: Path, searcher: str = "icrl", num_trials: int = 3,
                llm_base_url: str = "", **search) -> dict:
    """A tiny search (1-layer V-JEPA2, 1 epoch, the `tiny` world at 32 px) that runs in ~30 s a trial."""
    config = {
        "data": {"dataset": "synthetic", "root": str(data_root), "synth_preset": "tiny",
                 "num_frames": 8, "resolution": 32},
        "model": {"tiny_hidden": 32, "tiny_layers": 1},
        "train": {"epochs": 1, "final_epochs": 1, "batch_size": 4, "num_workers": 1,
                  "cpus_per_worker": 0.5, "lr": 1e-3, "eval_segments": 2, "eval_views": 1},
        "search": {"searcher": searcher, "num_trials": num_trials, "max_classes": 4, **search},
        "llm": {"api_key_env": "A2O_RELIABILITY_KEY", "response_format": "text"},
        "storage": {"root": storage_root, "experiment_name": "reliability"},
        "ray": {"num_cpus": 2},
    }
    if searcher in ("icrl",):
        config["llm"]["base_url"] = llm_base_url
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def base_env(label: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one `a2o search` process: a fresh temp dir of its own (so its staging
    folder is its own; short: Ray's socket paths live there), no inherited Ray address, Ray's
    token auth off (a local test cluster)."""
    tmp_dir = tempfile.mkdtemp(prefix=f"a2o-{label}-")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", TMPDIR=str(tmp_dir), A2O_RELIABILITY_KEY="sk-not-a-secret")
    env.pop("RAY_ADDRESS", None)
    env.update(extra or {})
    return env


def run_search(config: Path, cwd: Path, env: dict[str, str], log_path: Path, *, resume: bool = False,
               interrupt_after: int | None = None, timeout_s: float = 900.0,
               during=None) -> int:
    """`a2o search` in its own process; SIGINT once ``interrupt_after`` trials are done.

    ``during(proc)`` (optional) runs in a thread while the search runs (the node killer)."""
    cmd = [sys.executable, "-m", "a2o.cli", "search", "--config", str(config)] + (["--resume"] if resume else [])
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        helper = threading.Thread(target=during, args=(proc,), daemon=True) if during else None
        if helper:
            helper.start()
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                if interrupt_after is not None and log_path.read_text().count("] done") >= interrupt_after:
                    proc.send_signal(signal.SIGINT)
                    interrupt_after = None
                time.sleep(0.5)
            if proc.poll() is None:
                proc.kill()
                raise RuntimeError(f"`a2o search` did not finish within {timeout_s:.0f} s; log: {log_path}")
            return proc.returncode
        finally:
            if proc.poll() is None:
                proc.kill()
            if helper:
                helper.join(timeout=5)


def expect(rc: int, wanted: int, log_path: Path) -> None:
    if rc != wanted:
        tail = log_path.read_text()[-4000:] if log_path.exists() else ""
        raise RuntimeError(f"`a2o search` exited with {rc}, expected {wanted}; log {log_path}:\n{tail}")


# ---------------------------------------------------------------------------------------------
# reading outcomes


def read_results(storage_root: str) -> dict:
    import fsspec

    with fsspec.open(storage_root.rstrip("/") + "/results.json", "r") as fh:
        return json.load(fh)


def count_trials(result: ScenarioResult, results: list[dict], planned: int) -> None:
    """Fill planned / run / repeated / lost / fallbacks / maps from results.json documents."""
    result.planned += planned
    sets: list[tuple[str, ...]] = []
    for document in results:
        for trial in document["trials"]:
            if trial.get("val_accuracy") is None:
                continue
            sets.append(tuple(sorted(trial["classes"])))
            result.maps_computed += int(trial.get("maps_computed") or 0)
            result.maps_reused += int(trial.get("maps_reused") or 0)
            result.trials.append({k: trial.get(k) for k in ("iteration", "classes", "source", "val_accuracy",
                                                             "maps_computed", "maps_reused")})
        stats = document.get("searcher_stats") or {}
        result.fallbacks += int(stats.get("fallbacks") or 0)
        result.proposals += int(stats.get("suggestions") or 0)
    result.run = len(sets)
    result.repeated = len(sets) - len(set(sets))
    result.lost = max(0, planned - len(set(sets)))


def audit_cache(result: ScenarioResult, maps_uri: str, *, versioned: bool = False) -> None:
    """Entries, corrupt entries (sha256 vs marker) and, on a versioned bucket, writes per entry."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(maps_uri)
    markers = [p for p in fs.find(root) if p.endswith(".done")]
    corrupt = 0
    for marker in markers:
        meta = json.loads(fs.cat_file(marker))
        data = fs.cat_file(marker[: -len(".done")] + ".npy")
        corrupt += hashlib.sha256(data).hexdigest() != meta["sha256"]
    result.map_entries = len(markers)
    result.corrupt_entries = corrupt
    locks = [p for p in fs.find(root) if p.endswith(".lock")]
    if locks:
        result.notes.append(f"{len(locks)} lock(s) left in the cache")
    if versioned:
        result.max_writes_per_entry = max_versions(maps_uri, suffix=".npy")


def max_versions(uri: str, suffix: str) -> int:
    """The most stored versions of any object under ``uri`` ending in ``suffix`` (a versioned bucket)."""
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    counts: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            if version["Key"].endswith(suffix):
                counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return max(counts.values(), default=0)


# ---------------------------------------------------------------------------------------------
# LLM endpoints and the object store


@contextlib.contextmanager
def llm_endpoint(kind: str, replies: list[str], log_dir: Path) -> Iterator[str]:
    """An OpenAI-compatible endpoint on a new port: the embedded model, or the scripted fake."""
    if kind == "fake":
        from tests.fake_llm_server import FakeLLMServer

        server = FakeLLMServer(list(replies), default="ball\ncup\nfloor")
        try:
            yield server.url
        finally:
            server.stop()
        return
    from a2o.config import LLMConfig
    from searchers.local_llm import start_local_llm

    server = start_local_llm(LLMConfig(base_url="local"), str(log_dir))
    try:
        yield server.base_url
    finally:
        server.stop()


@contextlib.contextmanager
def s3_bucket(work: Path, name: str, *, versioned: bool = True) -> Iterator[tuple[str, dict[str, str]]]:
    """An S3 server (moto, own process, loopback) with one bucket; yields (s3://bucket, env)."""
    import boto3

    from tests.s3_server import S3Server

    server = S3Server(str(work / "moto.log")).start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)  # this process's audits read the bucket too
    try:
        client = boto3.client("s3", endpoint_url=server.url)
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        yield f"s3://{name}", dict(server.env)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------------------
# scenarios


def scenario_resume(work: Path, llm: str = "embedded") -> ScenarioResult:
    """Ctrl-C after trial 1, then --resume against a new LLM endpoint; local storage."""
    result = ScenarioResult("resume")
    started = time.perf_counter()
    data_root = work / "dataset"
    replies = ["ball\nhand\nbox", "cup\nhand\nlid", "spoon\nball\nmop"]
    config = tiny_config(work, storage_root=str(work / "run"), data_root=data_root, num_trials=3)
    for part, (resume, interrupt, script) in enumerate([(False, 1, replies), (True, None, replies[1:])]):
        with llm_endpoint(llm, script, work / f"llm-{part}") as url:
            config["llm"]["base_url"] = url  # a new endpoint for the resumed run, as a restart gives
            path = write_config(work / "search.yaml", config)
            log = work / f"search-{part}.log"
            rc = run_search(path, work, base_env("resume"), log, resume=resume, interrupt_after=interrupt)
            expect(rc, 130 if interrupt else 0, log)
    count_trials(result, [read_results(str(work / "run"))], 3)
    audit_cache(result, str(work / "run" / "maps"))
    result.wall_s = time.perf_counter() - started
    return result


def scenario_bucket(work: Path, llm: str = "fake") -> ScenarioResult:
    """storage.root on S3; interrupted in one working dir, resumed from the bucket in another."""
    result = ScenarioResult("bucket")
    started = time.perf_counter()
    with s3_bucket(work, "a2o-bucket") as (bucket, s3_env):
        root = f"{bucket}/run"
        data_root = work / "dataset"  # the dataset is an input both machines read (NFS or a bucket on a cluster)
        replies = ["ball\nhand\nbox", "cup\nhand\nlid", "spoon\nball\nmop"]
        config = tiny_config(work, storage_root=root, data_root=data_root, num_trials=3)
        first, second = work / "machine-a", work / "machine-b"
        for part, (cwd, resume, interrupt, script) in enumerate(
                [(first, False, 1, replies), (second, True, None, replies[1:])]):
            with llm_endpoint(llm, script, work / f"llm-{part}") as url:
                config["llm"]["base_url"] = url
                cwd.mkdir(parents=True, exist_ok=True)
                path = write_config(cwd / "search.yaml", config)
                log = work / f"search-{part}.log"
                rc = run_search(path, cwd, base_env(cwd.name, s3_env), log, resume=resume, interrupt_after=interrupt)
                expect(rc, 130 if interrupt else 0, log)
            if part == 0:
                shutil.rmtree(first)  # nothing of the first machine survives but the bucket
        count_trials(result, [read_results(root)], 3)
        audit_cache(result, f"{root}/maps", versioned=True)
        import fsspec

        fs, path = fsspec.core.url_to_fs(root)
        best = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{path}/best"))
        if best != ["config.yaml", "metrics.json", "model"]:
            result.notes.append(f"best/ holds {best}")
        if not fs.glob(f"{path}/tune/reliability/experiment_state-*.json"):
            result.notes.append("no Tune experiment state in the bucket")
        if not fs.glob(f"{path}/frames/*/index.parquet"):
            result.notes.append("no frame store in the bucket")
        second_log = (work / "search-1.log").read_text()
        if "decoded 0," not in second_log:
            result.notes.append("the resumed run decoded frames again")
    result.wall_s = time.perf_counter() - started
    return result


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (by /proc parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def scenario_node(work: Path, llm: str = "fake") -> ScenarioResult:
    """A 2-node cluster sharing the bucket; the worker node dies while a trial trains on it."""
    from ray.cluster_utils import Cluster

    result = ScenarioResult("node")
    started = time.perf_counter()
    with s3_bucket(work, "a2o-nodes") as (bucket, s3_env):
        os.environ["RAY_AUTH_MODE"] = "disabled"
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
        worker = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        killed: dict[str, object] = {}

        def killer(proc: subprocess.Popen) -> None:
            raylet = worker.all_processes["raylet"][0].process.pid
            deadline = time.monotonic() + 600
            while proc.poll() is None and time.monotonic() < deadline and not killed:
                training = [p for p in _descendants(raylet) if _cmdline(p).startswith("ray::RayTrainWorker")]
                if training:
                    time.sleep(2.0)  # mid-trial: it is training by now
                    killed["pids"] = training
                    killed["at"] = time.perf_counter() - started
                    cluster.remove_node(worker, allow_graceful=False)  # raylet and its workers, SIGKILL
                    return
                time.sleep(0.3)

        try:
            root = f"{bucket}/run"
            # Two trials at once need 3 CPUs (0.5 trial driver + 1 Train worker each): the head has
            # 2, so at least one trains on the worker node.
            config = tiny_config(work, storage_root=root, data_root=work / "dataset", searcher="random",
                                 num_trials=4, vocabulary=VOCABULARY, max_concurrent=2, trial_retries=2)
            config["train"]["cpus_per_worker"] = 1
            config["train"]["epochs"] = 3
            config["ray"]["address"] = cluster.address
            path = write_config(work / "search.yaml", config)
            log = work / "search.log"
            env = base_env("node", s3_env)
            rc = run_search(path, work, env, log, during=killer)
            expect(rc, 0, log)
        finally:
            cluster.shutdown()
        if not killed:
            raise RuntimeError("no Ray Train worker ever ran on the worker node: nothing was killed")
        retries = log.read_text().count("retrying the same set")
        result.notes.append(f"worker node killed at {killed['at']:.0f} s with {len(killed['pids'])} Train worker(s) "
                            f"on it; {retries} trial(s) retried on the head node")
        count_trials(result, [read_results(root)], 4)
        audit_cache(result, f"{root}/maps", versioned=True)
    result.wall_s = time.perf_counter() - started
    return result


def scenario_shared(work: Path, llm: str = "fake") -> ScenarioResult:
    """Two `a2o search` processes at once, one map cache in the bucket, overlapping vocabularies."""
    result = ScenarioResult("shared")
    started = time.perf_counter()
    with s3_bucket(work, "a2o-shared") as (bucket, s3_env):
        procs = []
        for name, vocabulary, seed in (("a", ["ball", "hand", "box", "cup"], 0), ("b", ["box", "cup", "floor", "ball"], 1)):
            config = tiny_config(work, storage_root=f"{bucket}/{name}", data_root=work / "dataset", searcher="random",
                                 num_trials=2, vocabulary=vocabulary, seed=seed)
            config["storage"]["maps_root"] = f"{bucket}/maps"
            config["ray"]["num_cpus"] = 1
            path = write_config(work / f"{name}.yaml", config)
            log = work / f"{name}.log"
            thread_result: dict[str, int] = {}

            def go(path=path, log=log, name=name, out=thread_result):
                out[name] = run_search(path, work / name, base_env(f"shared-{name}", s3_env), log)

            thread = threading.Thread(target=go)
            thread.start()
            procs.append((thread, thread_result, name, log))
            time.sleep(1.0)  # the synthetic world is rendered by the first (a lock would serialise it anyway)
        for thread, out, name, log in procs:
            thread.join()
            expect(out.get(name, -1), 0, log)
        count_trials(result, [read_results(f"{bucket}/{name}") for name in ("a", "b")], 4)
        audit_cache(result, f"{bucket}/maps", versioned=True)
    result.wall_s = time.perf_counter() - started
    return result


RUNNERS = {"resume": scenario_resume, "bucket": scenario_bucket, "node": scenario_node, "shared": scenario_shared}


# ---------------------------------------------------------------------------------------------
# table


def table(results: list[ScenarioResult]) -> str:
    head = ("| scenario | trials planned / run / repeated / lost | fallbacks | maps computed / reused "
            "| entries (max writes per entry) | corrupt | wall |")
    lines = [head, "|" + "---|" * 7]
    for r in results:
        writes = f"{r.map_entries}" + (f" ({r.max_writes_per_entry})" if r.max_writes_per_entry is not None else "")
        lines.append(f"| {TITLES[r.scenario]} | {r.planned} / {r.run} / {r.repeated} / {r.lost} | "
                     f"{f'{r.fallbacks} of {r.proposals}' if r.proposals else '– (no LLM)'} | {r.maps_computed} / {r.maps_reused} | {writes} | "
                     f"{r.corrupt_entries} | {r.wall_s:.0f} s |")
    notes = [f"- {TITLES[r.scenario]}: {note}" for r in results for note in r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {SCENARIOS}")
    parser.add_argument("--llm", choices=("embedded", "fake"), default="embedded",
                        help="the LLM of the 'resume' scenario ('fake': a scripted server; the others use it always)")
    parser.add_argument("--out", default="runs/bench-reliability", help="work folder and results.json")
    parser.add_argument("--readme", default="", help="rewrite this README's reliability block")
    parser.add_argument("--keep", default="", help="also write results.json here (e.g. benchmarks/results/reliability.json)")
    args = parser.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    from benchmarks._common import machine_line, update_readme_section

    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out))
        print(f"reliability: {TITLES[name]} (work dir {work}) ...", flush=True)
        result = RUNNERS[name](work, llm=args.llm if name == "resume" else "fake")
        print(f"reliability: {TITLES[name]}: done in {result.wall_s:.0f} s", flush=True)
        results.append(result)
    text = table(results)
    print(text)
    document = json.dumps({"machine": machine_line(), "llm": args.llm, "scenarios": [asdict(r) for r in results]}, indent=2)
    (out / "results.json").write_text(document)
    if args.keep:
        Path(args.keep).write_text(document)
    if args.readme:

        update_readme_section(args.readme, "reliability",
                              f"```bash\npython -m benchmarks.reliability --llm {args.llm} --scenarios {','.join(names)}\n```\n\n"
                              f"{machine_line()}\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
