"""The studio: the service every front door (the app, the CLI, batch) uses over one cached model.

Modules, one job each: `device` (where the model runs, ZeroGPU), `weights` (which checkpoint, downloads,
the tiny fallback), `masks` (default and fitted masks, previews, upright images), `request` (the request,
validated once, then trusted), `progress` (stages and cancellation), `cache` (reference encodings by
content), `memory` (out-of-memory handling), `outputs` (PNGs and parameters.json), `service` (the Studio),
`preprocessing` (masks from clicks, pose maps from photos), `edit_request` (an edit, validated once),
`edit_sources` (what an edit takes from its source: kept parts, pose, region). Other packages import the
names below from `parts2whole.studio` itself, never from a submodule (except `preprocessing`, `inputs` and
`edit_sources`).
"""

from __future__ import annotations

from ..core.errors import (CheckpointError, GenerationCancelled, GenerationOutOfMemory,  # noqa: F401
                           Parts2WholeInputError)
from ..core.labels import MAX_REFERENCES, PART_LABELS, canonical_label  # noqa: F401
from ..core.limits import (MAX_IMAGE_PIXELS, MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, STUDIO_MAX_IMAGES,  # noqa: F401
                           STUDIO_MAX_SEED, STUDIO_MAX_STEPS)
from ..core.weights import HUB_TIMEOUT_S, WEIGHTS_DIR_ENV, hub_offline, is_unreachable, weights_dir  # noqa: F401
from ..model.schedulers import (DEFAULT_SCHEDULER, FAST_SCHEDULER, FAST_STEPS, SCHEDULER_NAMES,  # noqa: F401
                                SCHEDULERS, canonical_scheduler_name)
from .cache import DEFAULT_CACHE_BYTES, ReferenceCache, reference_key  # noqa: F401
from .device import (DTYPE_ENV, DEVICE_ENV, ZERO_GPU_DURATION_S, DeviceChoice, choose_device,  # noqa: F401
                     gpu_task, on_zero_gpu)
from .masks import (MASK_PREVIEW_BACKDROP, MASK_PREVIEW_FADE, default_mask, fit_mask, mask_coverage,  # noqa: F401
                    normalise_image, overlay_mask)
from .edit_request import EditRequest, changed_labels  # noqa: F401
from .memory import free_memory, is_out_of_memory, out_of_memory_message  # noqa: F401
from .outputs import parameters_json, png_bytes  # noqa: F401
from .progress import (STAGE_CACHED, STAGE_DECODING, STAGE_DENOISING, STAGE_DONE, STAGE_ENCODING,  # noqa: F401
                       STAGE_LOADING, STAGE_PREPROCESSING, ProgressCallback, ProgressUpdate)
from .request import (DEFAULT_FUSION_BLOCKS, DEFAULT_GUIDANCE, DEFAULT_HEIGHT, DEFAULT_STEPS,  # noqa: F401
                      DEFAULT_WIDTH, FUSION_BLOCK_CHOICES, MAX_IMAGES, MAX_SEED, MAX_STEPS, GenerationRequest,
                      GenerationResult)
from .service import TINY_BANNER, PipelineLoader, Studio, get_studio, load_pipeline  # noqa: F401
from .weights import (OFFICIAL_WEIGHTS, TINY_COMPLETE_MARKER, TINY_DIR_NAME, TINY_WEIGHTS, VAE_PATTERNS,  # noqa: F401
                      WEIGHTS_ENV, ResolvedWeights, ensure_tiny_checkpoint, resolve_weights)
