import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from physalign.bench import BenchError, Profile, get_profile, run_bench
from physalign.bench.compare import paired_difference
from physalign.bench.runner import Arm, arm_config, longest_first
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
    assert set(data["physics_vs_base"]["sft"]) == {"gravity_error", "fit_residual", "impulse", "penetration"}
    assert "## Continuous physics errors" in text and "| simulator |" in text.split("## Continuous physics errors")[1]
    assert "## Power of the paired Joint comparisons" in text and "| fm − sft | 3 |" in text
    assert data["vs_base"]["sft"]["joint"]["mde"] > 0 or data["vs_base"]["sft"]["joint"]["sd"] == 0
    for name in ("report.html", "metrics.png", "curves.png", "samples.gif"):
        assert (out / name).stat().st_size > 0
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

    control = get_profile("control")
    assert control.methods == ("sft", "control-negative")
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

    def vs_base(lo, hi):
        return {"pc": {"mean": (lo + hi) / 2, "lo": lo, "hi": hi, "n": 32}}

    seen, unseen = control_verdict(vs_base(-0.3, -0.1)), control_verdict(vs_base(-0.2, 0.05))
    assert seen["seen"] and not unseen["seen"]
    text = _controls_markdown({"control-negative": unseen})
    assert "NOT seen: the instrument could not see this change" in text and "-0.075 [-0.200, +0.050]" in text
