"""``physalign bench``: every selected method post-trained from the same base, on the same data, for the
same steps and seeds, then sampled on held-out prompts with the same noise and scored against ground truth.

Stages (each resumable: a finished stage's outputs are reused, an interrupted training run resumes):

1. data: post-training videos with counterfactuals (shared, ``data/post-N-sS``) and the test prompts;
2. caches (every method's run built once: latents, counterfactual latents, teacher features), then each
   method's training step against SFT's, interleaved in one process, while the other job slots sample and
   score the base, then train, sample and score SFT;
3. in the same schedule (:func:`schedule`), one run per (method, seed), trained once the caches are there,
   then sampled on the test prompts (one shard per slot) and scored, as jobs of one thread each, ``jobs`` at a
   time; when the step times are in, the runs not yet started are reordered by them (slowest first). The same
   sampling seed for all (paired comparisons);
4. the report (:mod:`physalign.bench.report`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from physalign.assets import resolve, shipped
from physalign.bench.profiles import CONTROLS, STARTS, VARIANTS, Profile, Recipe, recipe
from physalign.bench.timing import REFERENCE, step_times, warm_caches
from physalign.eval import evaluate_manifest
from physalign.models.sample_folder import part_manifest
from physalign.files import write_text_atomic
from physalign.process import PARENT_ENV, die_with_parent, reuse_freed_memory
from physalign.train.checkpoint import folder_fingerprint, has_checkpoints
from physalign.train.config import Config, load_config, save_config
from physalign.world import spec
from physalign.world.dataset import Mislabel, generate, load_manifest



class BenchError(RuntimeError):
    """A stage of the bench failed; the message names the stage, the run and its log."""


@dataclass
class Arm:
    """One trained model of the comparison: a method under one training seed."""

    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}"

    def run(self, out: Path) -> Path:
        """Its training run folder inside the bench folder ``out``."""
        return out / "runs" / self.name


def run_bench(profile: Profile, out: str | Path, base: str | Path | None = None, jobs: int = 2,
              data_root: str | Path = "data", configs: str | Path | None = None) -> Path:
    """Run the comparison into ``out``; returns the report's path (``out/report.md``). ``base`` and ``configs``
    default to the shipped base model and method configs (:mod:`physalign.assets`)."""
    out = Path(out)
    base = resolve(base) if base else shipped("checkpoints/base")
    configs = resolve(configs) if configs else shipped("configs/methods")
    if not (base / "physalign_model.json").is_file():
        raise BenchError(f"{base}: no base model (physalign_model.json missing); train one with `make base`")
    out.mkdir(parents=True, exist_ok=True)
    with bench_lock(out):
        claim(out, bench_settings(profile, base, Path(configs)))
        (out / "profile.json").write_text(json.dumps(profile.to_dict(), indent=2))
        with workers(max(1, jobs)) as pool:  # one set of worker processes for all the stages: imports paid once
            return _run_stages(profile, out, base, jobs, data_root, configs, pool)


def _run_stages(profile: Profile, out: Path, base: Path, jobs: int, data_root, configs, pool=None) -> Path:
    from physalign.bench.report import second_seed_methods, write_bench_report

    bench = _Stages(profile, out, base, Path(data_root), Path(configs), jobs, pool)
    arms = [Arm(m, s) for m in profile.methods for s in profile.seeds_of(m)]
    starts = {s: Arm(s, profile.seeds[0]) for s in dict.fromkeys(recipe(a.method).start for a in arms) if s != "base"}
    unknown = sorted(set(starts) - set(STARTS))
    if unknown:
        raise BenchError(f"no recipe for the starting model(s) {unknown}; known: {sorted(STARTS)}")
    bench.prepare([*starts.values(), *arms], starts)  # a starting model trains before the arms that start from it
    for method in dict.fromkeys(a.method for a in arms):  # a control read on a slice gets that slice's test set
        control = CONTROLS.get(method)
        if control and control.scene_slice:
            reference = starts[control.reference].name if control.reference in starts else control.reference
            bench.add_slice(control, [reference, *(a.name for a in arms if a.method == method)])
    early = [a for a in arms if a.method == REFERENCE][:1]  # SFT trains while the steps are timed
    timing, results, curves = bench.main_stage(
        {a.method: bench.cfgs[a.name] for a in arms if a.seed == profile.seeds_of(a.method)[0] and a.method not in CONTROLS},
        early, [*starts.values(), *(a for a in arms if a not in early)], starts)
    if profile.second_seeds and len(profile.seeds_of("sft")) > 1:
        # a method within SFT's seed spread gets SFT's second seed, so that it is not ranked on one run
        extra = [Arm(m, profile.seeds_of("sft")[1]) for m in second_seed_methods(arms, results)]
        extra = [a for a in extra if a not in arms]
        bench.prepare(extra, starts)
        scored, more_curves = bench.train_sample_score(extra, starts, timing)
        results, curves = results | scored, curves | more_curves
        arms += extra
    trains = [*starts.values(), *arms]
    return write_bench_report(out, profile, arms, results, timing, {a.name: a.run(out) for a in trains},
                              starts={n: a.name for n, a in starts.items()}, curves=curves)


class _Stages:
    """The bench's training, sampling and scoring of a set of arms, in ``out``, as jobs (:func:`schedule`)."""

    def __init__(self, profile: Profile, out: Path, base: Path, data_root: Path, configs: Path, jobs: int, pool=None):
        self.profile, self.out, self.base, self.data_root, self.configs, self.jobs = profile, out, base, data_root, configs, jobs
        self.pool = pool  # the bench's worker processes (:func:`workers`), shared by its schedules
        self.test_manifest = test_data(profile, out / "test")
        self.models, self.cfgs = {"base": base}, {}
        self.slices: dict[str, Path] = {}  # a control's slice name -> its test set
        self.on_slices: dict[str, list[str]] = {}  # model name -> the slices it is sampled on

    def add_slice(self, control, models: list[str]) -> None:
        """Sample ``models`` also on the test set of ``control``'s scene slice."""
        name = control.slice_name
        self.slices[name] = slice_test_data(self.profile, self.out / f"test-{name}", *control.scene_slice,
                                            control.slice_prompts)
        for model in models:
            self.on_slices.setdefault(model, []).append(name)

    def prepare(self, arms: list[Arm], starts: dict[str, Arm]) -> None:
        """Each arm's data, config (saved in ``out/configs``) and model path."""
        for arm in arms:
            r = recipe(arm.method)
            data = post_training_data(self.profile, self.data_root, r.corrupt_kinds, r.mislabel)
            self.models[arm.name] = arm.run(self.out) / "model"
            init = self.base if r.start == "base" else self.models[starts[r.start].name]
            self.cfgs[arm.name] = arm_config(arm, self.profile, data, init, self.data_root / "cache", self.configs)
            save_config(self.cfgs[arm.name], _config_path(self.out, arm))

    def main_stage(self, timed: dict[str, Config], early: list[Arm], rest: list[Arm], starts: dict[str, Arm]
                   ) -> tuple[dict, dict, dict]:
        """The caches and step times of the ``timed`` configs (kept in ``out/timing.json``), the base sampled and
        scored, the simulator's own videos scored, the ``early`` runs (SFT: its data are the first the caches
        hold) and then the ``rest`` trained, sampled and scored, as one schedule. The rest wait for the caches,
        not for the timing: a slot that frees up while the steps are being timed starts one of them, and when the
        timing is in, the runs not yet started are reordered by it (:func:`job_order`: the slowest first), so no
        slot waits on the timing. Returns the timing, the results by model (and test set) and the learning curves."""
        path = self.out / "timing.json"
        timing = json.loads(path.read_text()) if path.is_file() else None
        jobs = [] if timing else [
            Job("caches", call=partial(warm_caches, timed)),
            Job("step times", call=partial(step_times, timed, self.profile.timing_rounds), after=("caches",),
                then=lambda measured, pending: sorted(pending, key=_rank(job_order(rest, starts, measured))))]
        jobs += [*self.sample_jobs("base"), score_job("simulator", self.test_manifest),
                 *(job for arm in early for job in self.arm_jobs(arm, {})),
                 *(job for arm in job_order(rest, starts, timing or {}) for job in self.arm_jobs(arm, starts, ("caches",)))]
        values = schedule(jobs, self.jobs, self.out / "logs", "train, sample and score", self.pool)
        if "step times" in values:
            write_text_atomic(path, json.dumps(values["step times"], indent=2))
        results, curves = self.collect(values, [*early, *rest], ("base",))
        return json.loads(path.read_text()), {"simulator": values["score simulator"], **results}, curves

    def train_sample_score(self, trains: list[Arm], starts: dict[str, Arm], timing: dict) -> tuple[dict, dict]:
        """Train, sample and score the runs ``trains`` (:func:`job_order`); returns the results by model (and
        test set) and the learning curves."""
        jobs = [job for arm in job_order(trains, starts, timing) for job in self.arm_jobs(arm, starts)]
        return self.collect(schedule(jobs, self.jobs, self.out / "logs", "train, sample and score", self.pool), trains)

    def collect(self, values: dict, trains: list[Arm], models: tuple[str, ...] = ()) -> tuple[dict, dict]:
        """From the jobs' ``values``: the scores of the ``models`` and the runs ``trains`` by test set (``name``,
        ``name:slice``), and the runs' learning curves ({run: {step: scores}})."""
        results = {key: values[f"score {key}"] for name in [*models, *(a.name for a in trains)] for key, _ in self.test_sets(name)}
        curves = {arm.name: {step: values[_curve_score(arm, step)] for step in curve_steps(self.profile, recipe(arm.method).steps_factor)}
                  for arm in trains}
        return results, curves

    def arm_jobs(self, arm: Arm, starts: dict[str, Arm], after: tuple[str, ...] = ()) -> list[Job]:
        """Train (unless its export is there: exports are atomic) once the model it starts from is trained and
        the jobs ``after`` are done, then sample and score it, and the learning curve's points; each job's
        ``group`` is the run's name."""
        start = recipe(arm.method).start
        train = f"train {arm.name}"
        done = (self.models[arm.name] / "physalign_model.json").is_file()
        after = (*after, *((f"train {starts[start].name}",) if start in starts else ()))
        jobs = [*([] if done else [Job(train, cli=train_command(self.out, arm), after=after)]),
                *self.sample_jobs(arm.name, (train,)), *curve_jobs(self.out, arm, self.profile, self.test_manifest)]
        return [replace(job, group=arm.name) for job in jobs]

    def test_sets(self, name: str) -> list[tuple[str, Path]]:
        """(key, test manifest) of each test set model ``name`` is read on: the test prompts (key ``name``), then
        each slice it is read on (``name:slice``, e.g. "control-positive-s0:force-none")."""
        return [(name, self.test_manifest), *((f"{name}:{s}", self.slices[s]) for s in self.on_slices.get(name, []))]

    def sample_jobs(self, name: str, after: tuple[str, ...] = ()) -> list[Job]:
        """Sample model ``name`` on each of its test sets (unless done), once the jobs ``after`` are, and score each.
        Each sampling is one job per slot (``physalign sample --shard``; a job inside a worker costs a model load,
        no imports), so that a model's sampling never runs alone on one slot; the score waits for all."""
        jobs, shards = [], self.jobs
        for (key, manifest), s in zip(self.test_sets(name), ["", *self.on_slices.get(name, [])]):
            folder, sample = self.samples(name, s), f"sample {name} {s}".strip()
            command = sample_command(self.models[name], manifest, folder, self.profile)
            parts = [(sample, command)] if shards == 1 else \
                [(f"{sample} part {k}", [*command, "--shard", f"{k}/{shards}"]) for k in range(shards)]
            done = [shards > 1 and (folder / part_manifest(k, shards)).is_file() for k in range(len(parts))]
            parts = [part for part, d in zip(parts, done) if not d] or parts[-1:]  # the last joins the parts
            if not (folder / "manifest.jsonl").is_file():
                jobs += [Job(job, cli=cmd, after=after) for job, cmd in parts]
            jobs.append(score_job(key, folder / "manifest.jsonl", tuple(job for job, _ in parts)))
        return jobs

    def samples(self, name: str, slice_name: str = "") -> Path:
        return self.out / "samples" / name / slice_name if slice_name else self.out / "samples" / name


def job_order(trains: list[Arm], starts: dict[str, Arm], timing: dict) -> list[Arm]:
    """The order in which the runs' jobs are scheduled: each starting model followed by the arms that start from
    it (a chain of trainings, the longest path through the jobs), then the others slowest first."""
    first = [a for name, s in starts.items() if s in trains
             for a in [s, *(b for b in trains if recipe(b.method).start == name)]]
    return first + longest_first([a for a in trains if a not in first], timing)


def score_job(key: str, manifest: Path, after: tuple[str, ...] = ()) -> Job:
    """Score the videos of ``manifest`` against ground truth in a worker process: job ``score <key>``."""
    return Job(f"score {key}", call=partial(evaluate_manifest, manifest, progress=False), after=after)


def curve_steps(profile: Profile, factor: int = 1) -> list[int]:
    """The checkpoint steps sampled for the learning curve of a run of ``factor`` times the profile's steps,
    its last step excluded (its model is sampled anyway): ``curve_points`` evenly spaced checkpoints."""
    if profile.curve_points < 2:
        return []
    steps = profile.steps * factor
    every = steps // profile.curve_points
    return [every * k for k in range(1, profile.curve_points) if every * k < steps]


def _curve_folder(out: Path, arm: Arm, step: int) -> Path:
    return out / "curve" / arm.name / f"step_{step:06d}"


def _curve_score(arm: Arm, step: int) -> str:
    return f"score {arm.name} step {step}"


def curve_jobs(out: Path, arm: Arm, profile: Profile, test_manifest: Path) -> list[Job]:
    """Export each curve checkpoint's EMA model once the run is trained, sample it on the curve's prompts (the
    first ``curve_prompts`` test prompts, with the noise the full sampling gives them: the noise is drawn in
    order), and score those samples."""
    jobs = []
    for step in curve_steps(profile, recipe(arm.method).steps_factor):
        folder = _curve_folder(out, arm, step)
        export, sample = f"export {arm.name} {step}", f"sample {arm.name} {step}"
        if not (folder / "manifest.jsonl").is_file():
            ckpt, model = arm.run(out) / "checkpoints" / f"step_{step:06d}", folder / "model"
            jobs += [Job(export, cli=["export", str(ckpt), "--out", str(model)], after=(f"train {arm.name}",)),
                     Job(sample, cli=sample_command(model, test_manifest, folder, profile, profile.curve_prompts), after=(export,))]
        jobs.append(Job(_curve_score(arm, step), call=partial(evaluate_manifest, folder / "manifest.jsonl", progress=False),
                        after=(sample,)))
    return jobs


SETTINGS_FILE = "bench_settings.json"
ADDITIVE = ("methods", "seeds", "reference_seeds")  # a rerun may add methods or seeds: the others' stages stay valid


def bench_settings(profile: Profile, base: Path, configs: Path) -> dict:
    """Everything the cached stages of a bench depend on: the profile, the base (path and fingerprint), the
    world version and each method's config file (hash) and variant."""
    methods = {}
    starts = [r.start for r in map(recipe, profile.methods) if r.start != "base"]
    for method in [*profile.methods, *dict.fromkeys(starts)]:
        r = recipe(method)
        path = configs / f"{r.config}.yaml"
        methods[method] = {"config": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file()
                           else None, "variant": list(r.overrides)}
        methods[method] |= {"corrupt_kinds": list(r.corrupt_kinds)} if r.corrupt_kinds else {}
        methods[method] |= {k: getattr(r, k) for k in ("mislabel", "start", "steps_factor")
                            if getattr(r, k) != Recipe.__dataclass_fields__[k].default}
    settings = {"profile": {k: v for k, v in profile.to_dict().items() if k not in ADDITIVE}, "base": str(base),
                "base_fingerprint": folder_fingerprint(base), "world_version": spec.WORLD_VERSION, "methods": methods}
    return json.loads(json.dumps(settings))  # as a rerun reads it back (tuples become lists)


def claim(out: Path, settings: dict) -> None:
    """Record ``settings`` in ``out/bench_settings.json``, or refuse (naming each changed setting) a folder whose
    bench was made with other ones: its trained models, samples and timings would be reused as if they were
    this bench's. Methods and seeds may be added. A profile setting added to physalign after the folder was made
    counts as its default there (which keeps the behaviour of before)."""
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        defaults = {f.name: f.default for f in fields(Profile) if f.name not in ADDITIVE and f.default is not MISSING}
        old["profile"] = json.loads(json.dumps({**defaults, **old.get("profile", {})}))
        common = set(old.get("methods", {})) & set(settings["methods"])
        changed = _differences({**old, "methods": {m: old["methods"][m] for m in common}},
                               {**settings, "methods": {m: settings["methods"][m] for m in common}})
        if changed:
            raise BenchError(f"{out} holds a bench made with other settings ({'; '.join(changed[:6])}"
                             f"{'; ...' if len(changed) > 6 else ''}); its models and samples are not this bench's. "
                             f"Pass another --out, or delete {out} to redo it.")
        settings = {**settings, "methods": {**old.get("methods", {}), **settings["methods"]}}
    elif (out / "runs").is_dir() or (out / "samples").is_dir():
        raise BenchError(f"{out} holds a bench without a record of its settings ({SETTINGS_FILE}, written by "
                         "physalign since issue 16); pass another --out")
    write_text_atomic(path, json.dumps(settings, indent=2))


def _differences(old, new, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


@contextlib.contextmanager
def bench_lock(out: Path):
    """Hold ``out/.bench.lock`` for the block; refuse if another live bench holds it (the lock dies with its
    process, so a killed bench never blocks the next)."""
    handle = open(out / ".bench.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise BenchError(f"{out}: another bench (pid {holder}) is working in this folder; wait for it to end or "
                         "pass another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def longest_first(arms: list[Arm], timing: dict) -> list[Arm]:
    """``arms`` ordered by measured step time, slowest first, so the slowest run (PhysHPO's four levels)
    does not start last and run alone while the other job slot idles. Methods without a timing go last."""
    cost = {name: t["ratio"] for name, t in timing.items()}
    return sorted(arms, key=lambda a: -cost.get(a.method, cost.get(recipe(a.method).config, 0.0)))


def post_training_data(profile: Profile, root: Path, corrupt_kinds: tuple[str, ...] = (), mislabel: str = "") -> Path:
    """The post-training set of ``profile`` (with counterfactuals), generated once and shared by runs; with
    ``corrupt_kinds``, its corrupted copy (the same scenes) for a negative control; with ``mislabel``
    (FIELD:PROMPTED=SHOWN), its copy with one slice shown under another physics, to break a model."""
    want = {"n": profile.train_videos, "seed": profile.data_seed, "split": "train", "counterfactuals": True}
    folder = root / f"post-{profile.train_videos}-s{profile.data_seed}"
    if corrupt_kinds:
        want["corrupt_kinds"], folder = list(corrupt_kinds), folder.with_name(folder.name + "-corrupted")
    if mislabel:
        want["mislabel"] = mislabel
        folder = folder.with_name(folder.name + "-" + re.sub(r"\W+", "-", mislabel))
    return _stamped(folder, want)


def test_data(profile: Profile, folder: Path) -> Path:
    want = {"n": profile.test_prompts, "seed": profile.test_seed, "split": "test", "counterfactuals": False}
    return _stamped(folder, want)


SLICE_SEED_OFFSET = 1  # a slice's test set is drawn from another seed than the main test set: other prompts


def slice_test_data(profile: Profile, folder: Path, field: str, value: str, n: int) -> Path:
    """``folder/manifest.jsonl``: the first ``n`` test prompts whose scene has ``field = value``, drawn from the
    test split (a third out of distribution, as the main set) under another seed; made once, then reused."""
    want = {"n": n, "seed": profile.test_seed + SLICE_SEED_OFFSET, "split": "test", "slice": [field, value]}
    return _stamped(folder, want, _draw_slice)


def _draw_slice(folder: Path, want: dict) -> None:
    """Write ``folder/manifest.jsonl``: the first ``want["n"]`` prompts of ``want["slice"]``, drawn in doubling
    batches into ``folder/drawn``."""
    (field, value), n = want["slice"], want["n"]
    drawn, rows = n, []
    while len(rows) < n:
        drawn *= 2
        rows = [r for r in load_manifest(generate(folder / "drawn", drawn, "test", want["seed"], progress=False))
                if r["scene"].get(field) == value]
        if drawn > 10_000 * n:
            raise BenchError(f"no test prompts with {field} = {value} among {drawn} drawn")
    write_text_atomic(folder / "manifest.jsonl",
                      "".join(json.dumps({**r, "video": f"drawn/{r['video']}"}) + "\n" for r in rows[:n]))


def _generate(folder: Path, want: dict) -> None:
    """Simulate and render the set ``want`` describes (n, split, seed, counterfactuals, corruptions, mislabel)."""
    mislabel = Mislabel.parse(want["mislabel"]) if want.get("mislabel") else None
    generate(folder, want["n"], want["split"], want["seed"], counterfactuals=want["counterfactuals"],
             corrupt_kinds=tuple(want.get("corrupt_kinds", ())), mislabel=mislabel)


def _stamped(folder: Path, want: dict, make: Callable[[Path, dict], None] = _generate) -> Path:
    """``folder/manifest.jsonl``, made by ``make(folder, want)`` unless its stamp says it holds ``want`` from this
    world version (``spec.WORLD_VERSION``): a set made before a world change is not reused."""
    manifest, stamp = folder / "manifest.jsonl", folder / "bench_data.json"
    want = {**want, "world_version": spec.WORLD_VERSION}
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return manifest
    make(folder, want)
    stamp.write_text(json.dumps(want))
    return manifest


def arm_config(arm: Arm, profile: Profile, manifest: Path, base: Path, cache: Path, configs: Path) -> Config:
    """The method's own config (``configs/<method>.yaml``, or a named variant's, ``profiles.VARIANTS``) with the
    comparison's shared settings."""
    r = recipe(arm.method)
    path = configs / f"{r.config}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in configs.glob("*.yaml")) + sorted(VARIANTS) + sorted(CONTROLS)
        raise BenchError(f"method {arm.method!r}: no config {path}; available: {available}")
    curve = [f"train.save_every={profile.steps * r.steps_factor // profile.curve_points}", "train.keep_checkpoints=0"] \
        if curve_steps(profile) else [f"train.save_every={max(1, profile.steps * r.steps_factor // 4)}"]
    return load_config(path, [f"model.init={base}", f"data.manifest={manifest}", "data.split=train",
                              f"data.cache_dir={cache}", f"train.steps={profile.steps * r.steps_factor}",
                              f"train.batch_size={profile.batch_size}", f"train.seed={arm.seed}", "train.threads=1",
                              *curve, *r.overrides])  # the recipe's own settings last: they win


def _config_path(out: Path, arm: Arm) -> Path:
    path = out / "configs" / f"{arm.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def train_command(out: Path, arm: Arm) -> list[str]:
    run = arm.run(out)
    resume = has_checkpoints(run)
    return ["train", "--out", str(run), *(["--resume"] if resume else ["--config", str(_config_path(out, arm))])]


def sample_command(model: Path, manifest: Path, folder: Path, profile: Profile, limit: int = 0) -> list[str]:
    return ["sample", "--checkpoint", str(model), "--manifest", str(manifest),
            "--out", str(folder), "--samples-per-prompt", str(profile.samples_per_prompt), "--limit", str(limit),
            "--steps", str(profile.sample_steps), "--solver", profile.sample_solver, "--guidance", str(profile.guidance),
            "--seed", str(profile.test_seed), "--threads", "1"]


@dataclass
class Job:
    """One step of the bench, run in a job slot once the jobs named in ``after`` are done (a name that is not
    among the jobs scheduled counts as done: its output is there from an earlier run). One of:

    - ``cli``: a ``physalign`` command's arguments (``["train", "--out", ...]``), run in a worker process and
      logged to ``logs/<name>.log``; the worker has imported torch, diffusers and physalign once, so the job
      does not pay ~5 s of imports as a new process would;
    - ``command``: any program, run as a child process of one torch thread, logged the same way;
    - ``call``: a picklable function of no arguments, run in a worker process, whose value is kept.

    Workers have one torch thread each and die with the bench."""

    name: str
    command: list[str] = field(default_factory=list)
    call: Callable | None = None
    after: tuple[str, ...] = ()
    cli: list[str] = field(default_factory=list)
    then: Callable[[object, list[Job]], list[Job]] | None = None  # (its value, the jobs pending) -> the jobs pending now
    group: str = ""  # the run the job belongs to, for reordering (:func:`_rank`)


def schedule(jobs: list[Job], slots: int, logs: Path, desc: str = "jobs", pool: ProcessPoolExecutor | None = None) -> dict[str, object]:
    """Run ``jobs``, at most ``slots`` at a time: whenever a slot is free it takes the first job, in list order,
    whose ``after`` are done (list order is the priority: put the longest chains first and each job after the
    one it waits for, so a finished step's successor goes before a new chain and no slot idles while jobs are
    ready). Returns each job's value by name (a call's return value, None for a command). A failed job stops
    the bench with its log's tail once the running jobs end; no further job starts. Each finished job's start
    and end (seconds since the epoch) are appended to ``logs/timeline.jsonl`` (:func:`timeline_summary`). Calls and
    cli jobs run in ``pool`` (:func:`workers`), or in worker processes started for this call."""
    names, pending, running, values = {j.name for j in jobs}, list(jobs), {}, {}
    if not jobs:
        return values
    logs.mkdir(parents=True, exist_ok=True)
    own = workers(max(1, slots)) if pool is None and any(j.call or j.cli for j in jobs) else contextlib.nullcontext(pool)
    with ThreadPoolExecutor(max(1, slots)) as threads, own as procs, \
            tqdm(total=len(jobs), desc=desc, unit="job") as bar, open(logs / TIMELINE, "a") as timeline:
        while pending or running:
            ready = [j for j in pending if all(a in values or a not in names for a in j.after)]
            for job in ready[:max(1, slots) - len(running)]:
                pending.remove(job)
                running[_submit(job, threads, procs, logs)] = (job, time.time())
            if not running:
                raise BenchError(f"jobs wait on each other: {[(j.name, j.after) for j in pending]}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job, began = running.pop(future)
                values[job.name] = _value(job, future.result(), logs)
                if job.then:  # it may reorder the pending jobs or add some
                    pending = job.then(values[job.name], pending)
                    names |= {j.name for j in pending}
                    bar.total = len(values) + len(running) + len(pending)
                timeline.write(json.dumps({"job": job.name, "stage": desc, "start": began, "end": time.time()}) + "\n")
                timeline.flush()
                bar.update(1)
    return values


def _rank(order: list[Arm]) -> Callable[[Job], int]:
    """A sort key putting jobs in the order of their runs in ``order``; jobs of no run in it first, as they were."""
    rank = {arm.name: i for i, arm in enumerate(order)}
    return lambda job: rank.get(job.group, -1)


def _submit(job: Job, threads: ThreadPoolExecutor, workers: ProcessPoolExecutor | None, logs: Path):
    if job.call:
        return workers.submit(job.call)
    if job.cli:
        return workers.submit(run_cli, job.cli, str(_log(job, logs)))
    return threads.submit(_run_command, job, logs)


def _value(job: Job, value, logs: Path):
    """A call's value; a cli job's exit code checked (a command's is checked in its thread)."""
    if not job.cli:
        return value
    if value != 0:
        raise BenchError(f"{job.name} failed (exit {value}); log {_log(job, logs)}:\n{_tail(_log(job, logs))}")
    return None


TIMELINE = "timeline.jsonl"


def timeline_summary(path: Path, slots: int = 2) -> dict:
    """From a bench's ``logs/timeline.jsonl``: its wall time (first start to last end), the job-seconds spent in
    each kind of job (the name's first word: train, sample, score, export, ...), and the share of the ``slots``
    that jobs kept busy: job-seconds / (slots x wall)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        return {"wall_s": 0.0, "busy": 0.0, "by_kind": {}}
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    kinds: dict[str, float] = {}
    for r in rows:
        kinds[r["job"].split()[0]] = kinds.get(r["job"].split()[0], 0.0) + r["end"] - r["start"]
    return {"wall_s": wall, "busy": sum(kinds.values()) / (slots * wall) if wall else 0.0, "jobs": len(rows),
            "by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}


def _log(job: Job, logs: Path) -> Path:
    return logs / f"{job.name.replace(' ', '_')}.log"


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _run_command(job: Job, logs: Path) -> None:
    log = _log(job, logs)
    with open(log, "w") as f:
        code = subprocess.run(job.command, stdout=f, stderr=subprocess.STDOUT, env=_one_thread_env()).returncode
    if code != 0:
        raise BenchError(f"{job.name} failed (exit {code}); log {log}:\n{_tail(log)}")


def run_cli(args: list[str], log: str) -> int:
    """``physalign <args>`` in this process, everything it writes to stdout and stderr (file descriptors 1 and 2:
    tqdm, warnings, native libraries) into ``log``; returns its exit code (a traceback in the log and 1 if it
    raised). For a worker process that runs one job at a time."""
    import gc
    import runpy
    import traceback

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        argv, sys.argv = sys.argv, ["physalign", *args]
        try:  # the program, as `python -m physalign.cli` runs it (the runner does not import the CLI layer above it)
            runpy.run_module("physalign.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - the job failed; the bench reports it with this log's tail
            traceback.print_exc()
            code = 1
        finally:
            sys.argv = argv
            _forget_accelerate_state()  # the next job starts as in a new process (its own mixed precision, say)
            gc.collect()  # the job's model and optimizer go now, not at some later job's collection
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    return code


def _forget_accelerate_state() -> None:
    """Clear accelerate's process-wide state (``AcceleratorState``, ``PartialState``): it keeps the first
    ``Accelerator``'s settings and refuses another mixed precision in the same process (a bf16 training after an
    fp32 one in one worker). Single-process jobs only: the bench's workers run no distributed launch."""
    import accelerate.state as state

    reset = getattr(state.AcceleratorState, "_reset_state", None)  # accelerate's own reset (its tests use it)
    if reset is not None:
        reset(reset_partial_state=True)


@contextlib.contextmanager
def workers(n: int):
    """``n`` worker processes for the bench's calls and cli jobs: spawned, not forked (the bench has threads and
    torch's thread pool), one torch thread each, and killed with the bench as its children are. They are started
    from this thread, which must live as long as they do (the kernel's parent-death signal follows the thread
    that forked)."""
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                             initargs=(os.getpid(),)) as pool:
        yield pool


def _worker_start(bench_pid: int) -> None:
    import torch

    os.environ[PARENT_ENV] = str(bench_pid)  # this worker's own environment
    die_with_parent()
    reuse_freed_memory()
    torch.set_num_threads(1)


def _one_thread_env() -> dict:
    """One torch thread, and the bench's pid, so each child dies with the bench (``physalign.cli.main``)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", PARENT_ENV: str(os.getpid())}
