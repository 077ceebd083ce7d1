"""The deterministic selection: which test samples are example candidates (their masks and maps are read,
with spares), which become examples (a varied set, EXAMPLE_PROFILES), which targets' DensePose maps are read
as pose candidates, which of them the gallery shows, and the zip members all of that needs."""

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
#: Candidates whose masks and DensePose map are read per example wanted: the masks tell which parts are
#: visible (hair, shoes) and the spares replace damaged or unusable candidates. Bounded: at most this many
#: times the examples wanted, one range read per member.
EXAMPLE_CANDIDATE_FACTOR = 3

#: The example set, in order: each profile is the attributes wanted. gender, outfit (one-piece or top+bottom),
#: piece (dress, jumpsuit...), bottom (trousers, shorts, skirt), view and headwear come from the caption and the id (`Sample.attributes`);
#: hair and shoes from the masks (visible or not, `checks.CandidateCheck.attributes`). A sample matching more
#: of them wins; ties go to an outfit, a category and a person not used yet, then to the lower id.
#: Together: men and women; dresses and jumpsuits, tops with trousers, shorts and skirts; with and without
#: hair and shoes visible; front, side, back and full-body views.
EXAMPLE_PROFILES: tuple[dict[str, str], ...] = (
    {"gender": "woman", "piece": "dress", "view": "front", "hair": "yes", "shoes": "yes"},
    {"gender": "man", "outfit": "top+bottom", "bottom": "trousers", "view": "front", "hair": "yes", "shoes": "yes"},
    {"gender": "woman", "outfit": "top+bottom", "bottom": "skirt", "view": "side", "shoes": "yes"},
    {"gender": "man", "outfit": "top+bottom", "bottom": "shorts", "view": "side", "hair": "no"},
    {"gender": "woman", "outfit": "one-piece", "view": "back", "hair": "yes"},
    {"gender": "woman", "outfit": "top+bottom", "bottom": "trousers", "view": "full", "shoes": "no"},
    {"gender": "man", "outfit": "top+bottom", "view": "full", "headwear": "yes"},
    {"gender": "woman", "outfit": "top+bottom", "bottom": "shorts", "view": "front", "hair": "yes"},
)


def _is_example_candidate(sample: Sample) -> bool:
    return bool(sample.usable_labels) and sample.densepose is not None and bool(sample.target)


class _Picker:
    """Greedy picking over EXAMPLE_PROFILES: per slot the best sample left (see EXAMPLE_PROFILES for the
    order), remembering what was used so ties go to something new."""

    def __init__(self, samples: Iterable[Sample], seen: dict[str, dict[str, str]] | None = None):
        self.pool = {}
        for sample in samples:  # one line per target (the first in index order)
            if _is_example_candidate(sample):
                self.pool.setdefault(sample.target_id, sample)
        seen = seen or {}
        self.attributes = {t: {**s.attributes, **seen.get(t, {})} for t, s in self.pool.items()}
        self.used: dict[str, set[str]] = {"target_id": set(), "person": set(), "category": set(), "outfit_text": set()}

    def use(self, sample: Sample) -> None:
        found = self.attributes[sample.target_id]
        self.used["target_id"].add(sample.target_id)
        for key in ("person", "category", "outfit_text"):
            self.used[key].add(found[key])

    def pick(self, profile: dict[str, str]) -> Sample | None:
        def rank(sample: Sample):
            found = self.attributes[sample.target_id]
            matched = sum(found.get(key) == value for key, value in profile.items())
            return (-matched, found["outfit"] == "unknown", found["outfit_text"] in self.used["outfit_text"],
                    found["category"] in self.used["category"], found["person"] in self.used["person"],
                    sample.target_id, sample.reference_id)

        left = [s for t, s in self.pool.items() if t not in self.used["target_id"]]
        if not left:
            return None
        best = min(left, key=rank)
        self.use(best)
        return best


def example_candidates(samples: Iterable[Sample], count: int = DEFAULT_EXAMPLE_COUNT,
                       factor: float = EXAMPLE_CANDIDATE_FACTOR) -> list[Sample]:
    """About `factor` x `count` candidates, by what their captions and ids say: the best for each profile of
    EXAMPLE_PROFILES in turn (cycled), again and again, so every profile has spares."""
    picker = _Picker(samples)
    wanted = min(round(count * factor), len(picker.pool))
    profiles = [EXAMPLE_PROFILES[index % len(EXAMPLE_PROFILES)] for index in range(count)]
    chosen: list[Sample] = []
    while len(chosen) < wanted:
        for profile in profiles:
            best = picker.pick(profile) if len(chosen) < wanted else None
            if best is not None:
                chosen.append(best)
    return chosen


def select_examples(samples: Iterable[Sample], count: int = DEFAULT_EXAMPLE_COUNT,
                    seen: dict[str, dict[str, str]] | None = None, keep: Iterable[Sample] = ()) -> list[Sample]:
    """A deterministic, varied selection: one sample per profile of EXAMPLE_PROFILES (cycled for more).

    `seen`: what the masks showed ({target id: {"hair": ..., "shoes": ...}}); `keep`: samples already
    chosen (staged), which keep their slots: the others are filled from `samples`."""
    samples = list(samples)
    picker = _Picker([*keep, *samples], seen)
    kept = {s.target_id: s for s in keep}
    for sample in kept.values():
        picker.use(sample)
    chosen: list[Sample] = list(kept.values())
    for index in range(len(kept), min(count, len(picker.pool))):
        best = picker.pick(EXAMPLE_PROFILES[index % len(EXAMPLE_PROFILES)])
        if best is None:
            break
        chosen.append(best)
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


def _members(paths: Iterable[str]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for path in paths:
        archive, member = archive_of(path)
        wanted.setdefault(archive, set()).add(member)
    return wanted


def wanted_checks(samples: Iterable[Sample]) -> dict[str, set[str]]:
    """{archive: members} that tell what a candidate shows: its masks and its DensePose map."""
    return _members(path for sample in samples
                    for path in [*(sample.masks[label] for label in sample.usable_labels), sample.densepose])


def wanted_maps(samples: Iterable[Sample]) -> dict[str, set[str]]:
    """{archive: members}: the DensePose maps of pose candidates."""
    return _members(sample.densepose for sample in samples)


def wanted_parts(samples: Iterable[Sample], visible: dict[str, Iterable[str]]) -> dict[str, set[str]]:
    """{archive: members}: the photos of each sample's visible parts and its real photo."""
    return _members(path for sample in samples
                    for path in [*(sample.parts[label] for label in visible[sample.target_id]), sample.target])


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
