"""Print how far preprocess.densepose is from detectron2 on the reference cases (../shared/densepose).

For each case folder (D1, and any other with a ``case.json``): rebuild its random checkpoint from
the recipe (digest checked), save it in the model-zoo pickle layout, load it through the real
loading path, run the case's photo and print the differences the tests bound (issue #12's bar:
boxes <= 0.5 px, scores <= 1e-3, part index equal on >= 99.5 % of the person's pixels, U / V
within 2/255 where it agrees, the IUV map likewise).

    nice -n 10 .venv/bin/python bench/densepose_parity.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    from densepose_reference import (
        compare_with_detectron2, expected_digest, rebuild_d1_weights, recipe_of, reference_cases,
        save_model_zoo_pickle, score_threshold_of, shared_available, weights_digest,
    )

    from preprocess.densepose import DensePoseEstimator, load_densepose

    if not shared_available():
        sys.exit("../shared/densepose is not here")
    with tempfile.TemporaryDirectory() as scratch:
        models = {}
        for case in reference_cases():
            recipe = recipe_of(case)
            if recipe not in models:
                tensors = rebuild_d1_weights(recipe)
                if weights_digest(tensors) != expected_digest(recipe):
                    sys.exit(f"{recipe}: rebuilt weights do not match the recipe's digest")
                path = save_model_zoo_pickle(tensors, Path(scratch) / f"{len(models)}.pkl")
                models[recipe] = load_densepose(path, device="cpu").model
            estimator = DensePoseEstimator(models[recipe], weights="reference", score_threshold=score_threshold_of(case))
            run = estimator.run(case / "input.jpg")
            result = estimator.result(run) if run.charts is not None else None
            figures = compare_with_detectron2(case, run, result)
            print(" ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
