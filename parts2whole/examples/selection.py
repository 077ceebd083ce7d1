"""The deterministic selection: which test samples become examples (a varied set, EXAMPLE_PROFILES), which
targets' DensePose maps are read as pose candidates, which of them the gallery shows, and the zip
members all of that needs."""

from __future__ import annotations

from collections.abc import Iterable

from .index import Sample
from .poses import PoseDescriptor
from .zips import archive_of

#: Selection sizes: ~8 examples (a varied set, see EXAMPLE_PROFILES) and ~24 poses for the gallery.
DEFAULT_EXAMPLE_COUNT = 8
DEFAULT_POSE_COUNT = 24
#: DensePose maps read per gallery pose, so the final pick can spread over facing and arm positions that
#: only the maps tell (1.5: 36 maps read for 24 shown).
POSE_CANDIDATE_FACTOR = 1.5

#: The example set, in order: each profile is the attributes wanted (see `Sample.attributes`). A sample
#: matching more of them wins; ties go to a category and a person not used yet, then to the lower id.
#: Together: men and women, dresses and tops with bottoms, with and without hair/headwear and shoes, and
#: front, side, back and full-body views.
EXAMPLE_PROFILES: tuple[dict[str, str], ...] = (
    {"gender": "woman", "outfit": "dress", "view": "front", "hair": "yes", "shoes": "yes"},
    {"gender": "man", "outfit": "top+bottom", "view": "front", "hair": "yes", "shoes": "yes"},
    {"gender": "woman", "outfit": "top+bottom", "view": "side", "hair": "yes", "shoes": "yes"},
    {"gender": "man", "outfit": "top+bottom", "view": "side", "shoes": "no"},
    {"gender": "woman", "outfit": "dress", "view": "back", "hair": "yes"},
    {"gender": "woman", "outfit": "top+bottom", "view": "full", "shoes": "no"},
    {"gender": "man", "outfit": "top+bottom", "view": "full", "hair": "no"},
    {"gender": "woman", "outfit": "dress", "view": "side", "shoes": "no"},
)


def _is_example_candidate(sample: Sample) -> bool:
    return bool(sample.usable_labels) and sample.densepose is not None and bool(sample.target)


def select_examples(samples: Iterable[Sample], count: int = DEFAULT_EXAMPLE_COUNT) -> list[Sample]:
    """A deterministic, varied selection: one sample per profile of EXAMPLE_PROFILES (cycled for more)."""
    candidates = [s for s in samples if _is_example_candidate(s)]
    chosen: list[Sample] = []
    used_targets, used_people, used_categories = set(), set(), set()
    attributes = {id(s): s.attributes for s in candidates}
    for index in range(min(count, len({s.target_id for s in candidates}))):
        profile = EXAMPLE_PROFILES[index % len(EXAMPLE_PROFILES)]

        def rank(sample: Sample):
            found = attributes[id(sample)]
            matched = sum(found.get(key) == value for key, value in profile.items())
            return (-matched, found["category"] in used_categories, found["person"] in used_people,
                    sample.target_id, sample.reference_id)

        pool = [s for s in candidates if s.target_id not in used_targets]
        if not pool:
            break
        best = min(pool, key=rank)
        chosen.append(best)
        used_targets.add(best.target_id)
        used_people.add(attributes[id(best)]["person"])
        used_categories.add(attributes[id(best)]["category"])
    return chosen


#: Views in the order the gallery spreads over them (from the ids; "unknown" last).
POSE_VIEWS = ("front", "side", "back", "full", "additional", "flat", "unknown")


def pose_candidates(samples: Iterable[Sample], count: int, exclude: Iterable[str] = ()) -> list[Sample]:
    """`count` test targets with a DensePose map, spread over the views of their ids: round-robin over
    POSE_VIEWS, evenly spaced within each view's id-sorted list (so categories and genders spread too)."""
    excluded = set(exclude)
    unique: dict[str, Sample] = {}
    for sample in samples:
        if sample.densepose and sample.target_id not in excluded and sample.target_id not in unique:
            unique[sample.target_id] = sample
    by_view: dict[str, list[Sample]] = {view: [] for view in POSE_VIEWS}
    for sample in sorted(unique.values(), key=lambda s: s.target_id):
        view = sample.attributes["view"]
        by_view[view if view in by_view else "unknown"].append(sample)
    wanted = {view: 0 for view in POSE_VIEWS}
    remaining = min(count, len(unique))
    while remaining:
        for view in POSE_VIEWS:
            if remaining and wanted[view] < len(by_view[view]):
                wanted[view] += 1
                remaining -= 1
    picked = []
    for view in POSE_VIEWS:
        group, k = by_view[view], wanted[view]
        picked += [group[int((i + 0.5) * len(group) / k)] for i in range(k)]
    return picked


def choose(samples: list[Sample], count: int, pose_count: int) -> tuple[list[Sample], list[Sample]]:
    """The examples (`select_examples`) and the pose candidates (POSE_CANDIDATE_FACTOR times `pose_count`
    targets with a DensePose map, none of them an example's)."""
    chosen = select_examples(samples, count)
    candidates = pose_candidates(samples, max(pose_count, round(pose_count * POSE_CANDIDATE_FACTOR)),
                                 exclude=[s.target_id for s in chosen])
    return chosen, candidates


def wanted_members(chosen: Iterable[Sample], candidates: Iterable[Sample]) -> dict[str, set[str]]:
    """{archive: members} to read: each example's part photos, masks, real photo and DensePose map, and
    each pose candidate's DensePose map."""
    wanted: dict[str, set[str]] = {}
    for sample in chosen:
        for path in [*(sample.parts[l] for l in sample.usable_labels), *(sample.masks[l] for l in sample.usable_labels),
                     sample.target, sample.densepose]:
            archive, member = archive_of(path)
            wanted.setdefault(archive, set()).add(member)
    for sample in candidates:
        archive, member = archive_of(sample.densepose)
        wanted.setdefault(archive, set()).add(member)
    return wanted


#: Order in which the gallery takes one pose from each (facing, arms) group, again and again.
POSE_GROUPS = tuple((facing, arms) for facing in ("front", "side", "back", "unknown")
                    for arms in ("raised", "down", "unknown"))


def spread_poses(described: list[tuple[Sample, PoseDescriptor]], count: int) -> list[tuple[Sample, PoseDescriptor]]:
    """`count` poses taken round-robin over POSE_GROUPS, each group in candidate order (deterministic)."""
    groups = {group: [item for item in described if (item[1].facing, item[1].arms) == group] for group in POSE_GROUPS}
    picked: list[tuple[Sample, PoseDescriptor]] = []
    while len(picked) < min(count, len(described)):
        for group in POSE_GROUPS:
            if groups[group] and len(picked) < count:
                picked.append(groups[group].pop(0))
    return picked
