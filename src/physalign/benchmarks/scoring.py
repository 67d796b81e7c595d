"""Score a suite's videos with a :class:`Judge` as each benchmark scores them.

A :class:`Protocol` says how a suite's questions are put to a judge and how its answers are read
(:data:`PROTOCOLS`, chosen per judge by :func:`choose_protocol`):

- ``benchmark`` (VLM judges): the benchmark's own questions, its judge's conversation template and its reading
  of the answer (:mod:`physalign.judges.official`, which cites the reference files and functions);
- ``llava`` (VLM judges): physalign's wording in LLaVA-NeXT-Video's template, read from the answer logits;
- ``world`` (the world judge): the wording it was trained on (:mod:`physalign.judges.base`).

- **VideoPhy**: SA = ``yes_prob`` of the caption question, PC = ``yes_prob`` of the physics question
  (``P(yes) / (P(yes) + P(no))``, VideoCon-Physics' score); the mean of each is reported, and each passes at
  ``>= pass_prob`` (0.5 by default: ours, the reference writes continuous scores), Joint = both. Tables by
  ``states_of_matter`` (solid-solid, solid-fluid, fluid-fluid).
- **VideoPhy-2**: the caption and physics questions rated; ``benchmark``: the rating (0-5) is
  :func:`~physalign.judges.official.parse_rating` of the judge's greedy reply, as VideoPhy-2's ``inference.py``
  reads it; ``llava`` / ``world``: the **argmax** of the five probabilities of the ratings 1-5 (ties go to the
  lower rating), with the expected rating ``sum_k k p_k`` recorded per video too. It passes at >= 4; Joint =
  both. SA is judged against the caption even when the videos were sampled from the upsampled one. Tables by
  ``category`` and for the hard subset (``is_hard``); a file without them gets a line saying so.
- **PhyGenBench** [a simplification, ours; no ``benchmark`` protocol]: the paper scores each video 0-3 with a
  three-stage pipeline (key-phenomenon detection on retrieved key frames with a VQA score, the order of the
  phenomena across frames with a multi-image VLM, the whole video's naturalness with a video VLM; the three
  stage scores are averaged and rounded). We ask one judge three yes/no questions and give one point each:
  *phenomenon*: ``p = yes_prob(video, law question) >= 0.5``; *order*: ``p >= yes_prob(time-reversed video,
  same question)`` (the law reads at least as well forwards as backwards; a phenomenon with no direction,
  a shadow, ties and scores); *natural*: ``yes_prob(video, physics question) >= 0.5``. The score (0-3) is
  reported /3, overall and by ``main_category`` and ``sub_category``.

Every video (prompt x seed) is one sample; rates carry percentile-bootstrap 95% intervals
(:func:`physalign.eval.stats.bootstrap_ci` for pass rates, :func:`bootstrap_mean_ci` for means). Every report
names its judge and says whether its scores compare with the benchmark's published ones (:func:`describe_judge`:
never here, since the official judges cannot be loaded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from physalign.benchmarks.generate import MANIFEST, video_name
from physalign.benchmarks.suites import SuitePrompt
from physalign.eval.report import finite, fmt
from physalign.eval.stats import LEVEL, bootstrap_ci
from physalign.judges import official
from physalign.judges.base import PLAUSIBILITY_QUESTION, Conversation, Judge, fact_question, prompt_question
from physalign.video import VideoError, read_video

PASS_PROB, PASS_RATING = 0.5, 4


# --------------------------------------------------------------------------------------------- wording


def entail_question(caption: str) -> str:
    return f'does the video entail the caption "{caption.strip()}"?'


def law_question(law: str) -> str:
    return f"does the video show the following: {law.strip().rstrip('.')}?"


@dataclass(frozen=True)
class Protocol:
    """How a judge is asked a suite's questions (about the caption, about physics in general, about a law) and
    how its answers are read.

    ``conversation``: the template the judge is asked in (None: the judge's own); ``replies``: VideoPhy-2's
    rating is parsed from the judge's greedy reply instead of taken as the argmax of its rating logits;
    ``pass_prob``: VideoPhy's threshold on P(yes)."""

    name: str
    caption: Callable[[str], str]
    physics: str
    law: Callable[[str], str]
    conversation: Conversation | None = None
    replies: bool = False
    pass_prob: float = PASS_PROB

    def ask(self, judge: Judge) -> Judge:
        """``judge`` asking in this protocol's conversation (itself if the protocol has none)."""
        return judge if self.conversation is None else judge.with_conversation(self.conversation)


OURS = {"llava": Protocol("llava", entail_question, PLAUSIBILITY_QUESTION, law_question),
        "world": Protocol("world", prompt_question, PLAUSIBILITY_QUESTION, fact_question)}
PROTOCOLS = {
    "videophy": {"benchmark": Protocol("benchmark", official.videophy_caption_question,
                                       official.VIDEOPHY_PHYSICS_QUESTION, law_question, official.VIDEOPHY_CONVERSATION),
                 **OURS},
    "videophy2": {"benchmark": Protocol("benchmark", official.videophy2_caption_question,
                                        official.VIDEOPHY2_PHYSICS_QUESTION, law_question,
                                        official.VIDEOPHY2_CONVERSATION, replies=True),
                  **OURS},
    "phygenbench": dict(OURS),
}


def choose_protocol(suite: str, judge_kind: str, name: str | None = None, pass_prob: float | None = None) -> Protocol:
    """The protocol ``name`` of ``suite`` for a judge of ``judge_kind`` ("vlm" or "world"); by default
    ``benchmark`` for a VLM when the suite has one (else ``llava``), ``world`` for the world judge."""
    names = PROTOCOLS[suite]
    if name is None:
        name = "world" if judge_kind == "world" else ("benchmark" if "benchmark" in names else "llava")
    if name not in names:
        raise ValueError(f"{suite} has no protocol {name!r}; it has {sorted(names)}")
    if (judge_kind == "world") != (name == "world"):
        raise ValueError(f"a {judge_kind} judge cannot be asked with protocol {name!r}: the world judge reads only "
                         "its own wording (protocol world), a VLM reads the others")
    if pass_prob is not None and not 0 < pass_prob < 1:
        raise ValueError(f"pass_prob must be in (0, 1). Got {pass_prob}.")
    return names[name] if pass_prob is None else replace(names[name], pass_prob=pass_prob)


# -------------------------------------------------------------------------------------- per video


def videophy_scores(judge: Judge, videos: torch.Tensor, prompts: Sequence[SuitePrompt], protocol: Protocol) -> list[dict]:
    """(B, 3, T, H, W) in [-1, 1] -> per video {sa_prob, pc_prob, sa, pc, joint}."""
    judge, cut = protocol.ask(judge), protocol.pass_prob
    sa = judge.yes_prob(videos, [protocol.caption(p.prompt) for p in prompts]).tolist()
    pc = judge.yes_prob(videos, [protocol.physics] * len(prompts)).tolist()
    return [{"sa_prob": s, "pc_prob": c, "sa": s >= cut, "pc": c >= cut, "joint": s >= cut and c >= cut}
            for s, c in zip(sa, pc)]


def videophy2_scores(judge: Judge, videos: torch.Tensor, prompts: Sequence[SuitePrompt], protocol: Protocol) -> list[dict]:
    """Per video {sa_rating, pc_rating, sa, pc, joint} and, by the protocol's reading, {sa_reply, pc_reply}
    (the parsed replies) or {sa_expected, pc_expected, sa_probs, pc_probs} (the argmax of the rating logits)."""
    judge, out = protocol.ask(judge), [{} for _ in prompts]
    read = _replied_ratings if protocol.replies else _argmax_ratings
    for name, questions in (("sa", [protocol.caption(p.prompt) for p in prompts]), ("pc", [protocol.physics] * len(prompts))):
        for row, fields in zip(out, read(judge, videos, questions)):
            row.update({f"{name}_{k}": v for k, v in fields.items()})
            row[name] = fields["rating"] >= PASS_RATING
    for row in out:
        row["joint"] = row["sa"] and row["pc"]
    return out


def _replied_ratings(judge: Judge, videos: torch.Tensor, questions: list[str]) -> list[dict]:
    """VideoPhy-2's reading: {"rating": 0..5 parsed from the greedy reply, "reply"}."""
    return [{"rating": official.parse_rating(r), "reply": r} for r in judge.rating_replies(videos, questions)]


def _argmax_ratings(judge: Judge, videos: torch.Tensor, questions: list[str]) -> list[dict]:
    """Ours: {"rating": argmax 1..5, "expected": sum_k k p_k, "probs"} of the judge's rating distribution."""
    probs = judge.rating(videos, questions)  # (B, 5)
    ratings = (probs.argmax(-1) + 1).tolist()
    expected = (probs @ torch.arange(1, 6, dtype=probs.dtype, device=probs.device)).tolist()
    return [{"rating": r, "expected": e, "probs": p} for r, e, p in zip(ratings, expected, probs.tolist())]


def phygenbench_scores(judge: Judge, videos: torch.Tensor, prompts: Sequence[SuitePrompt], protocol: Protocol) -> list[dict]:
    """Per video {law_prob, reversed_prob, natural_prob, phenomenon, order, natural, score (0..3)}."""
    judge, questions = protocol.ask(judge), [protocol.law(p.physical_law or p.prompt) for p in prompts]
    forward = judge.yes_prob(videos, questions).tolist()
    backward = judge.yes_prob(videos.flip(2), questions).tolist()  # time reversed
    natural = judge.yes_prob(videos, [protocol.physics] * len(prompts)).tolist()
    out = []
    for f, b, n in zip(forward, backward, natural):
        points = {"phenomenon": f >= PASS_PROB, "order": f >= b, "natural": n >= PASS_PROB}
        out.append({"law_prob": f, "reversed_prob": b, "natural_prob": n, **points, "score": sum(points.values())})
    return out


SCORERS = {"videophy": videophy_scores, "videophy2": videophy2_scores, "phygenbench": phygenbench_scores}
METRICS = {"videophy": ("sa", "pc", "joint", "sa_prob", "pc_prob"), "videophy2": ("sa", "pc", "joint"),
           "phygenbench": ("score", "phenomenon", "order", "natural")}
MEANS = {"score": 1 / 3, "sa_prob": 1.0, "pc_prob": 1.0}  # metrics reported as means (x this factor), not rates
HEADERS = {"sa": "SA", "pc": "PC", "joint": "Joint", "sa_prob": "mean SA P(yes)", "pc_prob": "mean PC P(yes)",
           "score": "score /3", "phenomenon": "phenomenon", "order": "order", "natural": "natural"}
# VideoPhy-2's tables that need optional columns: (table, what a prompt needs to be in it, the column)
OPTIONAL_TABLES = {"videophy2": (("category", lambda p: "category" in p.categories, "category"),
                                 ("subset", lambda p: p.is_hard is not None, "is_hard"))}


def group_keys(suite: str, prompt: SuitePrompt) -> list[tuple[str, str]]:
    """(table, value) pairs a video of ``prompt`` is counted under."""
    if suite == "videophy":
        return [("states_of_matter", prompt.categories["states_of_matter"])]
    if suite == "videophy2":
        keys = [("category", prompt.categories["category"])] if "category" in prompt.categories else []
        return keys + ([("subset", "hard" if prompt.is_hard else "not hard")] if prompt.is_hard is not None else [])
    return [("main_category", prompt.categories["main_category"]), ("sub_category", prompt.categories["sub_category"])]


# ------------------------------------------------------------------------------------------ summary


def bootstrap_mean_ci(values, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of (n,) values on a finite support and its percentile-bootstrap interval: (mean, low, high).

    A resample's value counts are Multinomial(n, observed frequencies), so its mean is drawn directly,
    ``counts @ support / n``: exact, and O(resamples x distinct values). NaNs if n = 0."""
    values = np.asarray(values, dtype=np.float64)
    if resamples < 1000:
        raise ValueError(f"resamples must be >= 1000 for a stable 95% interval. Got {resamples}.")
    if values.size == 0:
        return (float("nan"),) * 3
    support, counts = np.unique(values, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(values.size, counts / values.size, size=resamples)  # (R, K)
    lo, hi = np.percentile(draws @ support / values.size, [50 * (1 - level), 50 * (1 + level)])
    return float(values.mean()), float(lo), float(hi)


def rates(suite: str, rows: list[dict], resamples: int, seed: int) -> dict:
    """{"n", metric: {"mean", "lo", "hi"}}: pass rates, and the means of :data:`MEANS` (the PhyGenBench score
    as mean(score) / 3)."""
    out: dict = {"n": len(rows)}
    for m in METRICS[suite]:
        if m in MEANS:
            mean, lo, hi = bootstrap_mean_ci([r[m] * MEANS[m] for r in rows], resamples, seed)
        else:
            mean, lo, hi = bootstrap_ci([r[m] for r in rows], resamples, seed)
        out[m] = {"mean": mean, "lo": lo, "hi": hi}
    return out


def summarize(suite: str, results: list[dict], prompts: dict[str, SuitePrompt], resamples: int = 2000,
              seed: int = 0) -> dict:
    """Overall and per-group rates over the scored videos; unscored ones (missing, unreadable) listed."""
    scored = [r for r in results if "error" not in r]
    tables: dict[str, dict[str, list]] = {}
    for r in scored:
        for table, value in group_keys(suite, prompts[r["id"]]):
            tables.setdefault(table, {}).setdefault(value, []).append(r)
    return {
        "suite": suite,
        "n": len(scored),
        "prompts": len({r["id"] for r in scored}),
        "errors": [{"video": r["video"], "error": r["error"]} for r in results if "error" in r],
        "overall": rates(suite, scored, resamples, seed),
        "groups": {t: {v: rates(suite, rs, resamples, seed) for v, rs in sorted(groups.items())} for t, groups in tables.items()},
        "absent": absent_tables(suite, [prompts[r["id"]] for r in scored]),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL},
    }


def absent_tables(suite: str, prompts: list[SuitePrompt]) -> dict[str, str]:
    """{table: why} for the suite's tables the prompt file cannot fill (wholly or for some videos)."""
    out = {}
    for table, has, column in OPTIONAL_TABLES.get(suite, ()):
        missing = sum(not has(p) for p in prompts)
        if missing == len(prompts) and prompts:
            out[table] = f"no `{column}` column (or no value in it) in the prompt file: no {table} table"
        elif missing:
            out[table] = f"{missing} of {len(prompts)} videos have no `{column}` value and are in no {table} row"
    return out


# --------------------------------------------------------------------------------------- the folder


def find_clips(videos: str | Path, prompts: Sequence[SuitePrompt], seeds: Sequence[int] | None = None) -> list[dict]:
    """{"video", "id", "seed"} of the videos of ``prompts``, named ``<id>_s<seed>.mp4``, in ``videos/videos``
    or ``videos``: the given ``seeds`` (each one missing is returned with an "error"), or every seed found (a
    prompt with none is returned with an "error")."""
    root = Path(videos)
    clips = []
    for p in prompts:
        found = {}
        for folder in (root, root / "videos"):
            for f in folder.glob(f"{p.id}_s*.mp4"):
                seed = f.stem.rsplit("_s", 1)[1]
                if seed.isdigit():
                    found[int(seed)] = str(f.relative_to(root))
        wanted = sorted(found) if seeds is None else list(seeds)
        clips += [{"video": found[s], "id": p.id, "seed": s} if s in found else
                  {"video": video_name(p.id, s), "id": p.id, "seed": s, "error": f"missing (prompt {p.id}, seed {s})"}
                  for s in wanted]
        if not wanted:
            clips.append({"video": f"videos/{p.id}_s*.mp4", "id": p.id, "seed": None, "error": f"no video of prompt {p.id}"})
    return clips


def manifest_prompts(videos: str | Path) -> tuple[str, list[SuitePrompt], list[int]]:
    """The suite name, prompts and seeds a ``generate-suite`` folder was made with (its ``manifest.json``)."""
    path = Path(videos) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; give the suite file with --file to score videos named <id>_s<seed>.mp4")
    manifest = json.loads(path.read_text())
    fields = set(SuitePrompt.__dataclass_fields__)
    prompts = [SuitePrompt.from_dict({k: v for k, v in r.items() if k in fields}) for r in manifest["prompts"]]
    return manifest["settings"]["suite"], prompts, manifest["seeds"]


def to_judge_range(video: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(video).permute(3, 0, 1, 2).float().div(127.5).sub(1)


def score_clips(suite: str, judge: Judge, root: str | Path, clips: list[dict], prompts: dict[str, SuitePrompt],
                protocol: Protocol, batch_size: int = 8, progress: bool = True) -> list[dict]:
    """Decode and judge ``clips`` ``batch_size`` at a time (one judge call per video shape in a batch)."""
    root, results = Path(root), []
    todo = [c for c in clips if "error" not in c]
    results += [c for c in clips if "error" in c]
    for start in tqdm(range(0, len(todo), batch_size), desc=f"score {suite}", unit="batch", disable=not progress):
        by_shape: dict[tuple, list] = {}
        for clip in todo[start : start + batch_size]:
            try:
                video = read_video(root / clip["video"])
            except VideoError as err:
                results.append({**clip, "error": str(err)})
                continue
            by_shape.setdefault(video.shape, []).append((clip, to_judge_range(video)))
        for group in by_shape.values():
            batch = [prompts[c["id"]] for c, _ in group]
            with torch.no_grad():
                scores = SCORERS[suite](judge, torch.stack([v for _, v in group]), batch, protocol)
            results += [{**c, "prompt": p.prompt, **p.categories, **s} for (c, _), p, s in zip(group, batch, scores)]
    order = {(c["id"], c["video"]): i for i, c in enumerate(clips)}
    return sorted(results, key=lambda r: order[(r["id"], r["video"])])


# ------------------------------------------------------------------------------------------- report


def describe_judge(suite: str, path: str | Path, kind: str, protocol: Protocol) -> dict:
    """Who made the scores, how it was asked, and whether they compare with the benchmark's published scores.

    Never comparable here: the published automatic scores are the official judge's
    (:data:`~physalign.judges.official.OFFICIAL_JUDGES`), which physalign cannot load, and the human
    leaderboards are human ratings."""
    ref = official.OFFICIAL_JUDGES[suite]
    model = {"vlm": "LLaVA-NeXT-Video", "world": "physalign's world judge"}[kind]
    asked = {"benchmark": "the benchmark's questions, conversation template and answer reading",
             "llava": "physalign's questions in LLaVA-NeXT-Video's template, read from the answer logits",
             "world": "the world judge's own wording"}[protocol.name]
    return {"path": str(path), "kind": kind, "model": model, "protocol": protocol.name, "replies": protocol.replies,
            "pass_prob": protocol.pass_prob, "comparable": False,
            "why": f"judged by {model}, not by {ref.name} ({ref.hub}), whose scores are {ref.leaderboard}; asked "
                   f"with {asked}"}


def markdown(summary: dict, judge: dict) -> str:
    suite, b = summary["suite"], summary["bootstrap"]
    metrics = METRICS[suite]
    lines = [f"# {suite} scores", "", f"{summary['n']} videos of {summary['prompts']} prompts scored by "
             f"`{judge['path']}` ({judge['model']}, protocol `{judge['protocol']}`); mean [{b['level']:.0%} percentile "
             f"bootstrap interval, {b['resamples']} resamples, seed {b['seed']}]. {notes(suite, judge)}", "",
             f"**Not comparable with the published {suite} scores**: {judge['why']}.", ""]
    rows = [("all", summary["overall"])] + [(f"{t}={v}", m) for t, values in summary["groups"].items() for v, m in values.items()]
    lines += table(("group", "n", *(HEADERS[m] for m in metrics)), [(g, str(m["n"]), *(fmt(m[k]) for k in metrics)) for g, m in rows])
    if summary.get("absent"):
        lines += [""] + [f"- {t}: {why}." for t, why in summary["absent"].items()]
    if summary["errors"]:
        lines += ["", f"## {len(summary['errors'])} videos not scored", ""]
        lines += [f"- `{e['video']}`: {e['error']}" for e in summary["errors"]]
    return "\n".join(lines) + "\n"


def notes(suite: str, judge: dict) -> str:
    """How the table's numbers were computed, for ``judge``'s protocol."""
    if suite == "videophy":
        return (f"SA and PC pass at P(yes) / (P(yes) + P(no)) >= {judge['pass_prob']:g} (our threshold: the reference "
                "writes the continuous score, reported here as the mean P(yes)); Joint = both.")
    if suite == "videophy2":
        reading = ("ratings 0-5 parsed from the judge's greedy reply as VideoPhy-2's inference.py parses them (0 when "
                   "nothing parses)" if judge["replies"] else "the argmax ratings 1-5 of the judge's five rating "
                   "probabilities (ours)")
        return f"SA and PC are {reading}, passing at >= 4; Joint = both."
    return ("Score 0-3 per video (one point each for phenomenon, order, natural; our simplification of the paper's "
            "three-stage pipeline, see physalign.benchmarks.scoring), reported /3.")


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(r) + " |" for r in rows]


def write_scores(results: list[dict], summary: dict, out: str | Path, judge: dict, name: str = "score") -> Path:
    """Write OUT/<name>.json (summary, the judge (:func:`describe_judge`) and every video) and OUT/<name>.md;
    return the JSON's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"summary": summary, "judge": judge, "videos": results}
    path = out / f"{name}.json"
    path.write_text(json.dumps(finite(payload), indent=1, allow_nan=False))
    (out / f"{name}.md").write_text(markdown(summary, judge))
    return path
