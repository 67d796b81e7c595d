"""Bench profiles: how much data, training and sampling a comparison spends.

``quick`` is a smoke comparison that finishes in about 15 minutes on 2 CPU cores (its differences are
mostly noise: read its intervals); ``full`` is the powered comparison (docs/bench.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

METHODS = ("sft", "dfm", "repa", "trd", "tsa", "mtsa", "direct", "diffphy", "physhpo")
PHYSHPO_LEVELS = ("instance", "state", "motion", "semantic")
@dataclass(frozen=True)
class Recipe:
    """What an arm trains: a method config with overrides, on the post-training set (or a corrupted or
    mislabelled copy of it, ``physalign world generate --corrupt / --mislabel``), from a starting model."""

    config: str
    overrides: tuple[str, ...] = ()
    corrupt_kinds: tuple[str, ...] = ()
    mislabel: str = ""  # FIELD:PROMPTED=SHOWN (world.dataset.Mislabel)
    start: str = "base"  # "base", or a model the bench trains first (BROKEN)
    steps_factor: int = 1  # trains this many times the profile's steps


@dataclass(frozen=True)
class Control:
    """An arm that must move the bench's figures by a known sign, or the instrument cannot see a change: its
    paired Δ against ``reference`` must have a 95% interval wholly on the side of zero that ``expect`` gives for
    each metric. With ``scene_slice`` (field, value), the Δ is read on a test set of its own, ``slice_prompts``
    held-out prompts all from that slice (a slice is a fifth of the test prompts or less: too few to see a
    change on)."""

    recipe: Recipe
    reference: str
    expect: tuple[tuple[str, int], ...]  # (metric, sign): "pc" / "joint" or a continuous error of report.SHOWN_ERRORS
    scene_slice: tuple[str, str] | None = None
    slice_prompts: int = 96

    @property
    def slice_name(self) -> str:
        """The slice's test set, as a folder name (``force-none``); empty without a slice."""
        return "-".join(self.scene_slice) if self.scene_slice else ""


# Named variants of a method. PhysHPO's level ablation leaves each level out in turn; ``physhpo-anchored`` adds
# the winner's flow-matching loss (fm_weight 10: Flow-DPO's gradient starts at beta/2 = 50 times the error
# difference's, so an anchor of weight 1 would barely register), against the winners' FM loss rising tenfold in
# the full bench.
VARIANTS = {f"physhpo-no-{level}": Recipe("physhpo", (f"method.{level}_weight=0",)) for level in PHYSHPO_LEVELS}
VARIANTS["physhpo-anchored"] = Recipe("physhpo", ("method.fm_weight=10",))
# The negative control: SFT on the post-training set with each clip a corrupted copy of one of these kinds;
# its Δ PC against the base must be < 0.
NEGATIVE_KINDS = ("teleport", "freeze_midair", "pass_through_floor", "gain_energy", "gravity_upward", "wrong_gravity",
                  "weak_gravity")
# The positive control: a base broken on one slice of scenes (SFT on the post-training set with its zero-gravity
# prompts shown falling under normal gravity), then SFT on the clean set from that broken model, the repair
# trained as hard as the break (twice the profile's steps at three times its lr: a 150-step repair at the
# default lr moved the fitted zero-g acceleration by -34 units/s^2 but PC on the slice by only +0.021
# [-0.042, +0.083], results/bench_control/first_run); on the slice, its Δ against the broken model must show the
# repair: PC up, the acceleration fitted in zero gravity down.
BROKEN = "broken"
STARTS = {BROKEN: Recipe("sft", ("optim.lr=0.0003",), mislabel="force:none=normal", steps_factor=2)}
CONTROLS = {
    "control-negative": Control(Recipe("sft", corrupt_kinds=NEGATIVE_KINDS), "base", (("pc", -1),)),
    "control-positive": Control(Recipe("sft", ("optim.lr=0.0003",), start=BROKEN, steps_factor=2), BROKEN,
                                (("pc", 1), ("zero_g_accel", -1)), ("force", "none")),
}


def recipe(method: str) -> Recipe:
    """What an arm named ``method`` trains: a variant's, a control's, a starting model's or the method's own."""
    if method in VARIANTS:
        return VARIANTS[method]
    if method in CONTROLS:
        return CONTROLS[method].recipe
    return STARTS.get(method, Recipe(method))


@dataclass(frozen=True)
class Profile:
    name: str
    methods: tuple[str, ...] = METHODS
    train_videos: int = 2000  # post-training videos (each with its counterfactual)
    data_seed: int = 1  # the base model trained on seed 0's videos; post-training sees new ones
    steps: int = 600
    batch_size: int = 32
    seeds: tuple[int, ...] = (0,)  # one training run per method per seed
    reference_seeds: tuple[int, ...] = ()  # SFT's seeds when it needs more than the others (its seed spread)
    second_seeds: bool = False  # then train SFT's second seed for every method whose Δ Joint vs SFT is within it
    test_prompts: int = 96
    samples_per_prompt: int = 2
    sample_steps: int = 30
    sample_solver: str = "euler"  # physalign.models.sampling.SOLVERS; a folder made before this field was Euler's
    guidance: float = 4.0
    test_seed: int = 1234
    timing_rounds: int = 6  # step-time ratios: median of this many interleaved steps per method
    curve_points: int = 0  # learning curve: sample each run at this many evenly spaced checkpoints (the last is its model)
    curve_prompts: int = 0  # ... on the first this many test prompts (0: all)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_methods(self, methods: tuple[str, ...] | None) -> "Profile":
        return self if not methods else replace(self, methods=tuple(methods))

    def seeds_of(self, method: str) -> tuple[int, ...]:
        """The training seeds of ``method``: SFT (the reference) takes ``reference_seeds`` when given."""
        return tuple(self.reference_seeds) if method == "sft" and self.reference_seeds else tuple(self.seeds)


PROFILES = {
    # A smoke comparison of all nine methods, sized to 15 minutes on 2 cores. The old quick profile (500 videos,
    # 60 steps of batch 16, 48 prompts at 20 steps) was killed on a fresh clone at 19 min with 8 of its 19 runs
    # done; this one: 14 min 57 s for `make demo` on a fresh clone, set-up included (README).
    "quick": Profile("quick", train_videos=256, steps=30, batch_size=12, test_prompts=32, samples_per_prompt=1,
                     sample_steps=16, timing_rounds=3),
    # The powered comparison (issue 17): 300 steps of batch 32 (9,600 clips, ~5 passes over the 2,000 videos);
    # 400 test prompts x 1 sample, so that a paired Joint interval is about +-0.04 at the spread the v1 full bench
    # showed (its +-0.04 to +-0.06 at 192 pairs: sd of paired differences 0.28-0.42, (1.96 sd / 0.04)^2 = 196-424
    # pairs) and the pairs are independent (one video per prompt); SFT under two seeds, and a second seed for
    # every method within its spread; a learning curve at 75/150/225 steps on the first 96 prompts; both controls.
    "full": Profile("full", methods=(*METHODS, *CONTROLS), steps=300, test_prompts=400, samples_per_prompt=1,
                    reference_seeds=(0, 1), second_seeds=True, curve_points=4, curve_prompts=96),
    # the instrument's controls next to SFT, at the quick profile's data and a longer training; 192 test prompts
    # put about 36 on the positive control's slice (zero gravity)
    "control": Profile("control", methods=("sft", "control-negative", "control-positive"), train_videos=256, steps=150,
                       batch_size=12, test_prompts=192, samples_per_prompt=1, sample_steps=16, timing_rounds=2),
    # PhysHPO with each level left out, and with the FM anchor, at the quick profile's budget
    "ablation": Profile("ablation", methods=("sft", "physhpo", *VARIANTS), train_videos=500, steps=60, batch_size=16,
                        test_prompts=48, samples_per_prompt=1, sample_steps=20, timing_rounds=2),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown bench profile {name!r}; available: {sorted(PROFILES)}")
    return PROFILES[name]
