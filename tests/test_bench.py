import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from physalign.bench import BenchError, Profile, get_profile, run_bench
from physalign.bench.compare import paired_difference
from physalign.bench.runner import Arm, Job, arm_config, longest_first, schedule, score_job, timeline_summary
from physalign.models.world import WorldVideoModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_FULL_SHAPE = dict(layers=1, heads=2, head_dim=16, ffn_dim=32, text_dim=32, text_layers=1, vae_channels=[16, 16, 16])


pytestmark = pytest.mark.usefixtures("one_thread")


def test_paired_difference_matches_a_plain_bootstrap():
    rng = np.random.default_rng(3)
    a, b = rng.random(40) < 0.6, rng.random(40) < 0.4
    got = paired_difference(a, b, resamples=2000, seed=7)
    d = a.astype(float) - b.astype(float)
    draws = np.random.default_rng(7).integers(0, 40, size=(2000, 40))
    means = np.array([d[row].mean() for row in draws])  # one resample at a time
    assert got["mean"] == pytest.approx(d.mean())
    assert (got["lo"], got["hi"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert got["lo"] <= got["mean"] <= got["hi"] and got["n"] == 40
    same = paired_difference(a, a)
    assert same["mean"] == same["lo"] == same["hi"] == 0.0  # identical models: no difference, no spread
    with pytest.raises(ValueError, match="two vectors of one length"):
        paired_difference(a, b[:3])


def test_paired_power_figures_follow_their_definitions():
    rng = np.random.default_rng(5)
    a, b = (rng.random(200) < 0.6).astype(float), (rng.random(200) < 0.5).astype(float)
    got = paired_difference(a, b)
    sd = (a - b).std(ddof=1)
    assert got["sd"] == pytest.approx(sd)
    assert got["mde"] == pytest.approx((1.959964 + 0.841621) * sd / np.sqrt(200))
    assert got["n_for_target"] == int(np.ceil((1.959964 * sd / 0.04) ** 2))
    # the bootstrap half-width is the normal one, so n_for_target pairs would give about +-0.04
    assert (got["hi"] - got["lo"]) / 2 == pytest.approx(1.959964 * sd / np.sqrt(200), rel=0.12)
    # a true difference of one MDE is found (interval excluding zero) in about 80% of comparisons
    n, found = 60, 0
    shift = (1.959964 + 0.841621) / np.sqrt(n)  # one MDE for unit-sd differences
    for trial in range(120):
        d = np.random.default_rng(100 + trial).normal(shift, 1.0, n)
        r = paired_difference(d, np.zeros(n), resamples=1000, seed=trial)
        found += r["lo"] > 0
    assert 0.65 <= found / 120 <= 0.93
    assert np.isnan(paired_difference([], [])["mde"])


def test_profiles_and_method_configs():
    quick = get_profile("quick")
    assert quick.steps < get_profile("full").steps and "sft" in quick.methods
    with pytest.raises(ValueError, match="unknown bench profile 'fast'"):
        get_profile("fast")
    cfg = arm_config(Arm("sft", 3), quick, Path("m.jsonl"), Path("base"), Path("cache"), CONFIGS / "methods")
    assert (cfg.train.method, cfg.train.seed, cfg.train.steps, cfg.model.init, cfg.data.manifest) == ("sft", 3, quick.steps, "base", "m.jsonl")
    ablation = get_profile("ablation")
    for level in ("instance", "state", "motion", "semantic"):
        cfg = arm_config(Arm(f"physhpo-no-{level}", 0), ablation, Path("m.jsonl"), Path("base"), Path("cache"), CONFIGS / "methods")
        weights = {lv: cfg.method[f"{lv}_weight"] for lv in ("instance", "state", "motion", "semantic")}
        assert cfg.train.method == "physhpo" and weights == {lv: 0 if lv == level else 1.0 for lv in weights}
    anchored = arm_config(Arm("physhpo-anchored", 0), ablation, Path("m.jsonl"), Path("base"), Path("cache"), CONFIGS / "methods")
    assert (anchored.train.method, anchored.method["fm_weight"]) == ("physhpo", 10)
    assert "physhpo-anchored" in ablation.methods
    with pytest.raises(BenchError, match="method 'nope': no config"):
        arm_config(Arm("nope", 0), quick, Path("m.jsonl"), Path("base"), Path("cache"), CONFIGS / "methods")


def test_training_runs_start_slowest_first():
    timing = {"sft": {"ratio": 1.0}, "dfm": {"ratio": 0.9}, "physhpo": {"ratio": 4.0}, "physhpo-no-state": {"ratio": 3.0}}
    arms = [Arm("sft", 0), Arm("dfm", 0), Arm("physhpo-no-state", 0), Arm("physhpo", 1), Arm("physhpo-no-motion", 0),
            Arm("new", 0)]
    order = [a.name for a in longest_first(arms, timing)]
    # a variant without its own timing takes its method's; a method never timed goes last
    assert order == ["physhpo-s1", "physhpo-no-motion-s0", "physhpo-no-state-s0", "sft-s0", "dfm-s0", "new-s0"]


def test_schedule_runs_the_first_ready_job_first_and_each_after_those_it_waits_for(tmp_path):
    order = tmp_path / "order.txt"

    def say(name):
        return [sys.executable, "-c", f"open({str(order)!r}, 'a').write({name!r} + ' ')"]

    jobs = [Job("b", say("b"), after=("a",)), Job("a", say("a")), Job("c", say("c"), after=("done before",)),
            Job("sum", call=partial(sum, [1, 2]), after=("b",)), Job("d", say("d"), after=("sum",))]
    values = schedule(jobs, 1, tmp_path / "logs")
    # b waits for a; c's "done before" is no job here (its output exists): c is ready at once, but after b in order
    assert order.read_text().split() == ["a", "b", "c", "d"] and values == {"a": None, "b": None, "c": None, "sum": 3, "d": None}
    assert (tmp_path / "logs" / "c.log").is_file()
    rows = [json.loads(line) for line in (tmp_path / "logs" / "timeline.jsonl").read_text().splitlines()]
    assert [r["job"] for r in rows] == ["a", "b", "c", "sum", "d"]
    assert all(r["start"] <= r["end"] for r in rows) and all(a["end"] <= b["start"] for a, b in zip(rows, rows[1:]))
    with pytest.raises(BenchError, match="wait on each other"):
        schedule([Job("x", say("x"), after=("y",)), Job("y", say("y"), after=("x",))], 2, tmp_path / "logs")


def test_a_finished_job_may_reorder_the_pending_jobs_and_add_some(tmp_path):
    """What the step timing does: when it ends, the runs not started yet are put in the order it measured."""
    order = tmp_path / "order.txt"

    def say(name):
        return [sys.executable, "-c", f"open({str(order)!r}, 'a').write({name!r} + ' ')"]

    seen = []
    reorder = lambda value, pending: seen.append((value, [j.name for j in pending])) or [*pending[::-1], Job("added", say("added"))]  # noqa: E731
    jobs = [Job("timing", call=partial(sum, [2, 3]), then=reorder), Job("b", say("b"), after=("timing",)),
            Job("c", say("c"), after=("timing",))]
    values = schedule(jobs, 1, tmp_path / "logs")
    assert seen == [(5, ["b", "c"])] and order.read_text().split() == ["c", "b", "added"] and "added" in values


def test_timeline_summary_counts_busy_slots(tmp_path):
    rows = [("train a", 100, 110), ("score base", 100, 104), ("sample a", 110, 114), ("score a", 114, 115)]
    path = tmp_path / "timeline.jsonl"
    path.write_text("".join(json.dumps({"job": j, "stage": "s", "start": a, "end": b}) + "\n" for j, a, b in rows))
    got = timeline_summary(path, slots=2)
    assert got["wall_s"] == 15 and got["jobs"] == 4
    assert got["by_kind"] == {"train": 10, "score": 5, "sample": 4} and got["busy"] == pytest.approx(19 / 30)


def test_a_failed_job_stops_the_schedule_with_its_log(tmp_path):
    jobs = [Job("bad", [sys.executable, "-c", "print('no luck'); raise SystemExit(3)"]),
            Job("later", [sys.executable, "-c", f"open({str(tmp_path / 'ran')!r}, 'w')"])]
    with pytest.raises(BenchError, match=r"bad failed \(exit 3\); log .*bad.log:\nno luck"):
        schedule(jobs, 1, tmp_path / "logs")
    assert not (tmp_path / "ran").exists()


def test_physalign_commands_run_in_worker_processes_with_their_logs(tmp_path):
    """A cli job runs `physalign ...` in a worker, its output in its log; a failing one stops the schedule with the
    log's tail (here the command's own error message)."""
    world = tmp_path / "world"
    values = schedule([Job("make world", cli=["world", "generate", "--n", "2", "--split", "test", "--out", str(world)])],
                      1, tmp_path / "logs")
    assert values == {"make world": None} and len((world / "manifest.jsonl").read_text().splitlines()) == 2
    assert "world test" in (tmp_path / "logs" / "make_world.log").read_text()  # its progress bar, from the worker
    bad = Job("sample nothing", cli=["sample", "--checkpoint", str(tmp_path), "--prompt", "a ball", "--out", str(tmp_path / "s")])
    with pytest.raises(BenchError, match=r"sample nothing failed \(exit 2\); log .*sample_nothing.log:\nerror: missing verb"):
        schedule([bad], 1, tmp_path / "logs")
    crash = Job("crash", cli=["eval", str(tmp_path / "missing.jsonl")])
    with pytest.raises(BenchError, match=r"crash failed \(exit \d\)"):
        schedule([crash], 1, tmp_path / "logs")


def test_scores_in_worker_processes_equal_the_sequential_ones(tmp_path):
    from physalign.eval import evaluate_manifest
    from physalign.world.dataset import generate

    manifests = [generate(tmp_path / f"w{seed}", 3, "test", seed, progress=False) for seed in (0, 1, 2)]
    values = schedule([score_job(str(i), m) for i, m in enumerate(manifests)], 2, tmp_path / "logs")
    for i, manifest in enumerate(manifests):
        assert values[f"score {i}"] == evaluate_manifest(manifest, progress=False)


def test_bench_end_to_end_on_a_tiny_base_and_resume(tmp_path):
    torch.manual_seed(0)
    base = tmp_path / "base"
    WorldVideoModel.from_config(TINY_FULL_SHAPE).save_pretrained(base)
    profile = Profile("test", methods=("sft", "fm"), train_videos=6, steps=2, batch_size=2, test_prompts=3,
                      samples_per_prompt=1, sample_steps=2, guidance=2.0, timing_rounds=1)
    configs = tmp_path / "configs"
    configs.mkdir()
    sft = (CONFIGS / "methods" / "sft.yaml").read_text()
    (configs / "sft.yaml").write_text(sft)
    (configs / "fm.yaml").write_text(sft.replace("method: sft", "method: fm"))  # a second arm: the base's objective
    out = tmp_path / "bench"
    report = run_bench(profile, out, base=base, jobs=2, data_root=tmp_path / "data", configs=configs)
    data = json.loads((out / "bench.json").read_text())
    assert set(data["summaries"]) == {"simulator", "base", "sft", "fm"}
    assert data["summaries"]["simulator"]["overall"]["joint"]["mean"] == 1.0  # the ground truth scores itself
    assert data["step_time"]["sft"]["ratio"] == 1.0 and data["step_time"]["fm"]["ratio"] > 0
    assert set(data["vs_sft"]) == {"fm"} and data["vs_sft"]["fm"]["joint"]["n"] == 3
    assert set(data["vs_base"]) == {"sft", "fm"} and data["vs_base"]["sft"]["joint"]["n"] == 3  # each vs its start
    assert [r["step"] for r in data["curves"]["sft-s0"]] == [0, 1]
    text = report.read_text()
    assert "| sft | 3 |" in text and "step time / SFT" in text
    assert set(data["physics_vs_base"]["sft"]) == {"gravity_error", "zero_g_accel", "fit_residual", "impulse", "penetration"}
    assert "## Continuous physics errors" in text and "| simulator |" in text.split("## Continuous physics errors")[1]
    assert "## Power of the paired Joint comparisons" in text and "| fm − sft | 3 |" in text
    assert data["vs_base"]["sft"]["joint"]["mde"] > 0 or data["vs_base"]["sft"]["joint"]["sd"] == 0
    for name in ("report.html", "metrics.png", "curves.png", "samples.gif"):
        assert (out / name).stat().st_size > 0
    jobs = timeline_summary(out / "logs" / "timeline.jsonl")  # every job of both stages, timed
    assert {"caches", "step", "train", "sample", "score"} <= set(jobs["by_kind"]) and 0 < jobs["busy"] <= 1
    assert all((out / "samples" / "fm-s0" / f"manifest.part-{k}-of-2.jsonl").is_file() for k in (0, 1))  # the last run's
    trained = (out / "runs" / "sft-s0" / "model" / "physalign_model.json").stat().st_mtime_ns
    run_bench(profile, out, base=base, jobs=2, data_root=tmp_path / "data", configs=configs)  # finished stages are reused
    assert (out / "runs" / "sft-s0" / "model" / "physalign_model.json").stat().st_mtime_ns == trained
    with pytest.raises(BenchError, match="no base model"):
        run_bench(replace(profile, methods=("sft",)), tmp_path / "b2", base=tmp_path / "nothing")


def test_bench_cli_names_a_bad_profile_and_a_missing_base(tmp_path):
    from typer.testing import CliRunner

    from physalign.cli import app

    res = CliRunner().invoke(app, ["bench", "--profile", "fast", "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "unknown bench profile 'fast'" in res.output
    res = CliRunner().invoke(app, ["bench", "--base", str(tmp_path / "none"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "no base model" in res.output


def test_bench_data_is_regenerated_after_a_world_change(tmp_path, monkeypatch):
    from physalign.bench import runner
    from physalign.world import spec

    profile = Profile("t", train_videos=3, test_prompts=2)
    first = runner.test_data(profile, tmp_path / "test")
    stamp = json.loads((tmp_path / "test" / "bench_data.json").read_text())
    assert stamp["world_version"] == spec.WORLD_VERSION and stamp["n"] == 2
    before = first.stat().st_mtime_ns
    assert runner.test_data(profile, tmp_path / "test") == first and first.stat().st_mtime_ns == before  # reused
    monkeypatch.setattr(spec, "WORLD_VERSION", spec.WORLD_VERSION + 1)
    runner.test_data(profile, tmp_path / "test")
    assert json.loads((tmp_path / "test" / "bench_data.json").read_text())["world_version"] == spec.WORLD_VERSION
    assert first.stat().st_mtime_ns != before  # made again for the new world


def test_the_negative_control_trains_sft_on_corrupted_clips_and_the_report_says_whether_it_was_seen(tmp_path):
    from physalign.bench.profiles import NEGATIVE_KINDS
    from physalign.bench.report import _controls_markdown, control_verdict
    from physalign.bench.runner import bench_settings, post_training_data
    from physalign.world.dataset import load_manifest

    from physalign.bench.profiles import CONTROLS

    control = get_profile("control")
    assert control.methods[:2] == ("sft", "control-negative")
    small = replace(control, train_videos=6)
    clean, bad = post_training_data(small, tmp_path), post_training_data(small, tmp_path, NEGATIVE_KINDS)
    assert clean != bad and "corrupted" not in load_manifest(clean)[0]
    rows = load_manifest(bad)
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in load_manifest(clean)]
    assert any(r["corrupted"] in NEGATIVE_KINDS for r in rows)
    cfg = arm_config(Arm("control-negative", 0), small, bad, Path("base"), Path("cache"), CONFIGS / "methods")
    assert cfg.train.method == "sft" and cfg.data.manifest == str(bad)
    settings = bench_settings(small, tmp_path, CONFIGS / "methods")["methods"]
    assert settings["control-negative"]["corrupt_kinds"] == list(NEGATIVE_KINDS) and "corrupt_kinds" not in settings["sft"]

    results, arms = _fake_results({"base": 0.6, "control-negative-s0": 0.2}, 40)
    seen = control_verdict("control-negative", CONTROLS["control-negative"], arms, results, {"base": "base"})
    assert seen["seen"] and seen["checks"]["pc"]["hi"] < 0
    results, arms = _fake_results({"base": 0.6, "control-negative-s0": 0.55}, 40)
    unseen = control_verdict("control-negative", CONTROLS["control-negative"], arms, results, {"base": "base"})
    assert not unseen["seen"] and unseen["checks"]["pc"]["lo"] < 0 < unseen["checks"]["pc"]["hi"] + 1e-9
    text = _controls_markdown({"control-negative": unseen})
    assert "NOT seen: the instrument could not see this change" in text and "Δ pc vs base < 0" in text


SCENE = {"kind": "ball", "color": "red", "size": "small", "background": "black", "kinematics": "dropped",
         "force": "normal", "material": "rubber", "interaction": "none", "magnitude": "high", "other_color": None}


def _fake_results(pass_rates: dict, n: int, force=lambda i: "low" if i % 2 else "normal", gravity=None, zero_g=None):
    """Evaluator results of ``n`` videos per model (same names, so they pair), PC passing at each model's rate
    (the first round(rate * n) videos), scenes alternating two gravities (``force``); ``gravity`` / ``zero_g``:
    model -> the gravity ratio / zero-gravity acceleration of every video."""
    from physalign.bench.runner import Arm
    from physalign.eval.checks import Check
    from physalign.eval.score import VideoResult

    results = {}
    for model, rate in pass_rates.items():
        results[model] = [VideoResult(video=f"v{i}.mp4", prompt=f"p{i}", scene={**SCENE, "force": force(i)},
                                      checks=[Check("gravity", "PC", i < round(rate * n))],
                                      physics_errors={"gravity_ratio": (gravity or {}).get(model, 1.0),
                                                      "zero_g_accel": (zero_g or {}).get(model, 0.0)}) for i in range(n)]
    arms = [Arm(m.rsplit("-s", 1)[0], int(m.rsplit("-s", 1)[1])) for m in pass_rates if "-s" in m]
    return results, arms


def test_the_positive_control_breaks_a_base_on_one_slice_then_judges_the_repair_there(tmp_path):
    """control-positive starts from the broken model (SFT on data whose zero-gravity prompts fall under normal
    gravity) and trains SFT on the clean set; its verdict reads only the slice, against the broken model."""
    from physalign.bench.profiles import BROKEN, CONTROLS, recipe
    from physalign.bench.report import control_verdict
    from physalign.bench.runner import bench_settings, post_training_data
    from physalign.world.dataset import load_manifest

    control = get_profile("control")
    assert set(control.methods) == {"sft", "control-negative", "control-positive"}
    small = replace(control, train_videos=9)
    broken = post_training_data(small, tmp_path, mislabel=recipe(BROKEN).mislabel)
    rows = load_manifest(broken)
    assert {r["scene"]["force"] for r in rows if r["mislabelled"]} == {"none"}
    settings = bench_settings(small, tmp_path, CONFIGS / "methods")["methods"]
    assert settings[BROKEN]["mislabel"] == "force:none=normal" and settings["control-positive"]["start"] == BROKEN
    assert settings[BROKEN]["steps_factor"] == 2 and arm_config(Arm(BROKEN, 0), small, broken, Path("base"), Path(
        "cache"), CONFIGS / "methods").train.steps == 2 * small.steps
    positive = CONTROLS["control-positive"]
    names = {"base": "base", BROKEN: "broken-s0"}
    # repaired on the slice (zero gravity: odd videos), unchanged elsewhere: seen
    rate = {"broken-s0": 0.0, "control-positive-s0": 1.0}
    slice_ = lambda i: "none" if i % 2 else "normal"  # noqa: E731
    results, arms = _fake_results(rate, 60, slice_, zero_g={"broken-s0": 30.0, "control-positive-s0": 2.0})
    for r in results["control-positive-s0"][::2]:  # the normal-gravity half keeps the broken model's verdicts
        r.checks[0].passed = False
    got = control_verdict("control-positive", positive, arms, results, names)
    assert got["seen"] and got["checks"]["pc"]["n"] == 30 and got["checks"]["pc"]["mean"] == 1.0
    assert got["checks"]["zero_g_accel"]["mean"] == pytest.approx(2.0 - 30.0) and got["slice"] == "on force = none"
    # PC repaired but the fall in zero gravity not: not seen
    results, arms = _fake_results(rate, 60, slice_, zero_g={"broken-s0": 30.0, "control-positive-s0": 30.0})
    got = control_verdict("control-positive", positive, arms, results, names)
    assert got["checks"]["pc"]["seen"] and not got["checks"]["zero_g_accel"]["seen"] and not got["seen"]


def test_seed_spread_and_learning_curves_from_results():
    from physalign.bench.report import learning_curves, second_seed_methods, seed_spread
    from physalign.bench.runner import curve_steps

    results, arms = _fake_results({"base": 0.5, "sft-s0": 0.5, "sft-s1": 0.75, "tsa-s0": 0.25}, 8)
    spread = seed_spread(arms, results)
    assert list(spread) == ["sft: s1 − s0"] and spread["sft: s1 − s0"]["pc"]["mean"] == pytest.approx(0.25)
    # SFT's seeds differ by 0.25 Joint: TSA's -0.25 vs SFT is within that spread, REPA's -0.5 is not
    results |= _fake_results({"repa-s0": 0.0}, 8)[0]
    arms += [Arm("repa", 0)]
    assert second_seed_methods(arms, results) == ["tsa"]
    assert second_seed_methods([a for a in arms if a.seed == 0], results) == []  # no spread without a second seed
    profile = Profile("t", steps=8, curve_points=4, curve_prompts=2, samples_per_prompt=2, test_prompts=4)
    assert curve_steps(profile) == [2, 4, 6] and curve_steps(replace(profile, curve_points=0)) == []
    assert curve_steps(profile, factor=2) == [4, 8, 12]  # a run of twice the steps: its own quarters
    mid, _ = _fake_results({"a": 1.0, "b": 0.0, "c": 0.5}, 8)
    table = learning_curves(arms, results, {"sft-s0": {2: mid["a"], 4: mid["b"], 6: mid["c"]}}, profile, {})
    points = table["sft-s0"]
    assert [p["step"] for p in points] == [0, 2, 4, 6, 8] and all(p["n"] == 4 for p in points)  # 2 prompts x 2
    assert [p["pc"]["mean"] for p in points] == [1.0, 1.0, 0.0, 1.0, 1.0]  # the first 4 videos of each set
    assert points[0]["gravity_error"] == 0.0


def test_bench_with_a_positive_control_two_sft_seeds_and_a_learning_curve_end_to_end(tmp_path, monkeypatch):
    """The broken model trains first (on the mislabelled set) and control-positive starts from its export;
    both are also sampled on the slice's own test prompts; SFT runs under two seeds; every run is sampled at its
    curve checkpoint on the first curve prompts."""
    from physalign.bench.profiles import CONTROLS
    from physalign.train.config import load_config

    torch.manual_seed(0)
    base = tmp_path / "base"
    WorldVideoModel.from_config(TINY_FULL_SHAPE).save_pretrained(base)
    monkeypatch.setitem(CONTROLS, "control-positive", replace(CONTROLS["control-positive"], slice_prompts=2))
    profile = Profile("test", methods=("sft", "control-positive"), train_videos=6, steps=2, batch_size=2,
                      reference_seeds=(0, 1), test_prompts=3, samples_per_prompt=1, sample_steps=2, guidance=2.0,
                      timing_rounds=1, curve_points=2, curve_prompts=2)
    out = tmp_path / "bench"
    report = run_bench(profile, out, base=base, jobs=2, data_root=tmp_path / "data", configs=CONFIGS / "methods")
    cfg = load_config(out / "configs" / "control-positive-s0.yaml")
    assert cfg.model.init == str(out / "runs" / "broken-s0" / "model") and "force-none-normal" in load_config(
        out / "configs" / "broken-s0.yaml").data.manifest
    for run, step in (("broken-s0", 2), ("sft-s0", 1), ("sft-s1", 1), ("control-positive-s0", 2)):
        curve = out / "curve" / run / f"step_{step:06d}" / "manifest.jsonl"
        assert len(curve.read_text().splitlines()) == 2, run  # the first 2 test prompts x 1 sample
    data = json.loads((out / "bench.json").read_text())
    assert set(data["summaries"]) == {"simulator", "base", "broken", "sft", "control-positive"}
    assert data["summaries"]["sft"]["n"] == 6 and list(data["seed_spread"]) == ["sft: s1 − s0"]
    assert [p["step"] for p in data["learning_curves"]["sft-s1"]] == [0, 1, 2]
    assert [p["step"] for p in data["learning_curves"]["control-positive-s0"]] == [0, 2, 4]  # twice the steps
    assert data["controls"]["control-positive"]["reference"] == "broken" and "broken" in data["vs_base"]
    text = report.read_text()
    assert text.startswith("> **Control control-positive**, on force = none (its own test prompts):")
    rows = [json.loads(line) for line in (out / "samples" / "broken-s0" / "force-none" / "manifest.jsonl").open()]
    assert len(rows) == 2 and {r["scene"]["force"] for r in rows} == {"none"}  # the slice's test set, sampled
    assert (out / "samples" / "control-positive-s0" / "force-none" / "manifest.jsonl").is_file() and "## Learning curves" in text
    assert "## Training seeds" in text and (out / "learning_curves.png").stat().st_size > 0
    trained = (out / "runs" / "broken-s0" / "model" / "physalign_model.json").stat().st_mtime_ns
    run_bench(profile, out, base=base, jobs=2, data_root=tmp_path / "data", configs=CONFIGS / "methods")
    assert (out / "runs" / "broken-s0" / "model" / "physalign_model.json").stat().st_mtime_ns == trained


def test_a_slice_test_set_holds_only_that_slice_and_is_drawn_once(tmp_path):
    from physalign.bench.runner import slice_test_data
    from physalign.world.dataset import load_manifest

    profile = Profile("t", test_prompts=4)
    manifest = slice_test_data(profile, tmp_path / "s", "force", "none", 5)
    rows = load_manifest(manifest)
    assert len(rows) == 5 and {r["scene"]["force"] for r in rows} == {"none"}
    assert all((tmp_path / "s" / r["video"]).is_file() for r in rows)
    before = manifest.stat().st_mtime_ns
    assert slice_test_data(profile, tmp_path / "s", "force", "none", 5) == manifest and manifest.stat().st_mtime_ns == before


def test_sample_command_samples_with_the_profiles_solver(tmp_path):
    from dataclasses import replace

    from physalign.bench.profiles import get_profile
    from physalign.bench.runner import sample_command

    profile = replace(get_profile("quick"), sample_solver="dpm++2m", sample_steps=7)
    cmd = sample_command(tmp_path / "m", tmp_path / "test.jsonl", tmp_path / "s", profile)
    assert cmd[cmd.index("--solver") + 1] == "dpm++2m" and cmd[cmd.index("--steps") + 1] == "7"


def test_paired_differences_pair_videos_by_name_and_skip_missing_errors():
    from physalign.bench.compare import paired_differences

    results, _ = _fake_results({"a": 0.75, "b": 0.25}, 8, gravity={"a": 1.5, "b": 1.2})
    results["b"] = results["b"][::-1]  # paired by video name, not by position
    results["b"][0].physics_errors["gravity_ratio"] = None  # v7's gravity is not fitted in b: that pair drops out
    d = paired_differences(results["a"], results["b"])
    assert d["pc"]["mean"] == pytest.approx(0.75 - 0.25) and d["pc"]["n"] == 8
    assert d["gravity_error"]["mean"] == pytest.approx(0.5 - 0.2) and d["gravity_error"]["n"] == 7
    assert d["zero_g_accel"]["mean"] == 0 and set(d) >= {"pc", "sa", "joint", "penetration"}


def test_one_worker_trains_in_fp32_then_in_bf16(tmp_path):
    """accelerate keeps a process's first mixed precision and refuses another; a worker forgets it between jobs,
    so one worker can run an fp32 training and then a bf16 one, as two processes could."""
    from physalign.bench.runner import workers
    from test_train import overrides, write_world

    world = write_world(tmp_path / "world")

    def train(name: str, precision: str) -> Job:
        sets = overrides(world, tmp_path, "train.steps=1", f"train.mixed_precision={precision}")
        return Job(f"train {name}", cli=["train", "--out", str(tmp_path / name), *(a for s in sets for a in ("--set", s))])

    with workers(1) as pool:
        schedule([train("fp32", "no"), train("bf16", "bf16")], 1, tmp_path / "logs", pool=pool)
    assert all((tmp_path / name / "model" / "physalign_model.json").is_file() for name in ("fp32", "bf16"))
