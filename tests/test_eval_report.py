"""Summaries, bootstrap intervals, reports, manifests and the `physalign eval` command."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from physalign.cli import app
from physalign.eval import ManifestError, VideoResult, evaluate_manifest
from physalign.eval.checks import Check
from physalign.eval.report import markdown, text_table, write_report
from physalign.eval.score import read_manifest
from physalign.eval.stats import bootstrap_ci, summarize
from physalign.video import write_mp4
from physalign.world.render import render
from physalign.world.scene import prompt_to_scene, scene_to_prompt
from physalign.world.sim import simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"


def test_bootstrap_matches_plain_resampling():
    scores = np.array([1] * 70 + [0] * 30)
    mean, lo, hi = bootstrap_ci(scores, resamples=4000, seed=1)
    rng = np.random.default_rng(0)
    plain = scores[rng.integers(0, len(scores), size=(4000, len(scores)))].mean(1)  # the textbook bootstrap
    assert mean == 0.7
    assert lo == pytest.approx(np.percentile(plain, 2.5), abs=0.015)
    assert hi == pytest.approx(np.percentile(plain, 97.5), abs=0.015)
    assert bootstrap_ci(scores, seed=3) == bootstrap_ci(scores, seed=3)  # seeded
    assert bootstrap_ci(np.ones(10))[1:] == (1.0, 1.0)
    assert all(np.isnan(bootstrap_ci([])))
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci(scores, resamples=100)


def result(prompt: str, pc: bool, sa: bool, ood: bool = False) -> VideoResult:
    scene = prompt_to_scene(prompt)
    checks = [Check("gravity", "PC", pc), Check("size", "SA", sa), Check("momentum", "PC", None)]
    return VideoResult("v.mp4", prompt, scene.to_dict(), ood, checks)


def test_summary_groups_by_axis_split_and_check():
    low = DROP.replace("normal gravity", "low gravity")
    results = [result(DROP, True, True), result(DROP, False, True), result(low, True, False, ood=True),
               VideoResult("gone.mp4", DROP, prompt_to_scene(DROP).to_dict(), error="gone.mp4: no such video file")]
    s = summarize(results)
    assert s["n"] == 3 and s["errors"] == [{"video": "gone.mp4", "error": "gone.mp4: no such video file"}]
    assert s["overall"]["joint"]["mean"] == pytest.approx(1 / 3)
    assert s["axes"]["forces"]["normal"]["n"] == 2 and s["axes"]["forces"]["normal"]["pc"]["mean"] == 0.5
    assert s["axes"]["forces"]["low"]["sa"]["mean"] == 0.0
    assert s["split"]["ood"]["n"] == 1 and s["split"]["in-distribution"]["n"] == 2
    assert s["checks"]["gravity"] == {"group": "PC", "passed": 2, "n": 3, "not_applicable": 0, "pass_rate": 2 / 3}
    assert s["checks"]["momentum"]["n"] == 0 and s["checks"]["momentum"]["not_applicable"] == 3
    md, text = markdown(s), text_table(s)
    assert "| forces=low | 1 |" in md and "| gravity | PC | 0.667 | 3 | 0 |" in md and "gone.mp4" in md
    assert "forces=normal" in text and "no such video file" in text


def test_markdown_shows_the_continuous_errors_with_their_intervals():
    a, b, c = result(DROP, True, True), result(DROP, False, True), result(DROP, True, True, ood=True)
    a.physics_errors, b.physics_errors, c.physics_errors = {"gravity_ratio": 0.5}, {"gravity_ratio": 0.7}, {"gravity_ratio": 0.9}
    s = summarize([a, b, c])
    assert s["physics_errors"]["gravity_ratio"]["mean"] == pytest.approx(0.7)
    md = markdown(s)
    assert "## Continuous physics errors" in md
    assert "| gravity_ratio | all | 3 | 0.700 | 0.700 [" in md  # median, then mean [interval]
    assert "| gravity_ratio | in-distribution | 2 | 0.600 | 0.600 [0.500, 0.700] |" in md
    assert "| gravity_ratio | ood | 1 | 0.900 |" in md and "| penetration |" not in md  # no video has it


def test_write_report_is_valid_json(tmp_path):
    results = [result(DROP, True, True)]
    write_report(results, summarize(results), tmp_path)
    data = json.loads((tmp_path / "eval.json").read_text())  # strict JSON: no NaN
    assert data["videos"][0]["checks"][2] == {"name": "momentum", "group": "PC", "passed": None, "value": None, "detail": ""}
    assert data["summary"]["split"]["ood"]["pc"]["mean"] is None
    assert (tmp_path / "eval.md").read_text().startswith("# Physics evaluation")


def write_clips(folder, prompts):
    lines = []
    for i, prompt in enumerate(prompts):
        scene = prompt_to_scene(prompt)
        write_mp4(folder / f"videos/{i}.mp4", render(scene, simulate(scene, i)))
        lines.append({"video": f"videos/{i}.mp4", "prompt": scene_to_prompt(scene), "scene": scene.to_dict()})
    return lines


def test_eval_command_scores_and_lists_unreadable_videos(tmp_path):
    lines = write_clips(tmp_path, [DROP, DROP.replace("rubber", "steel"), DROP.replace("ball", "block")])
    lines.append({"video": "videos/missing.mp4", "prompt": DROP})  # scene from the prompt
    (tmp_path / "videos/broken.mp4").write_bytes(b"not a video")
    lines.append({"video": "videos/broken.mp4", "prompt": DROP})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = CliRunner().invoke(app, ["eval", "--videos", str(tmp_path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "all" in res.output and "videos/missing.mp4: no such video file" in res.output
    report = json.loads((tmp_path / "out/eval.json").read_text())
    assert report["summary"]["n"] == 3 and report["summary"]["overall"]["joint"]["mean"] == 1.0
    assert [e["video"] for e in report["summary"]["errors"]] == ["videos/missing.mp4", "videos/broken.mp4"]
    assert "cannot decode" in report["summary"]["errors"][1]["error"]


def test_video_paths_resolve_against_the_manifest_or_the_videos_folder(tmp_path):
    lines = write_clips(tmp_path, [DROP])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "m.jsonl").write_text(json.dumps(lines[0]) + "\n")
    assert evaluate_manifest(elsewhere / "m.jsonl", progress=False)[0].error is not None
    assert evaluate_manifest(elsewhere / "m.jsonl", videos_root=tmp_path, progress=False)[0].joint


@pytest.mark.parametrize("line, field", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"prompt": "x"}', "field 'video'"),
    ('{"video": "a.mp4"}', "needs a field 'scene'"),
    ('{"video": "a.mp4", "prompt": "a purple ball floats"}', "field 'prompt'"),
    ('{"video": "a.mp4", "scene": {"kind": "ball"}}', "field 'scene'"),
    ('{"video": "a.mp4", "prompt": "%s", "ood": "yes"}' % DROP, "field 'ood'"),
])
def test_bad_manifest_lines_are_named(tmp_path, line, field):
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps({"video": "ok.mp4", "prompt": DROP}) + "\n\n" + line + "\n")
    with pytest.raises(ManifestError, match=f"manifest.jsonl:3: .*{field}"):
        read_manifest(path)
    res = CliRunner().invoke(app, ["eval", "--videos", str(tmp_path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "manifest.jsonl:3" in res.output


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest file"):
        read_manifest(tmp_path / "nope.jsonl")
