"""The whole UI around one studio: its preprocessing service and example library, the page, its events."""

from __future__ import annotations

import gradio as gr

from parts2whole import examples as examples_module
from parts2whole import studio as studio_module
from parts2whole.studio.preprocessing import PreprocessingService

from .bundle import BUNDLE_MAX_AGE_S
from .events import wire_events
from .galleries import EXAMPLES_DIR
from .layout import build_page
from .theme import APP_TITLE


def build_demo(studio: studio_module.Studio, service: PreprocessingService | None = None,
               library: examples_module.ExampleLibrary | None = None) -> gr.Blocks:
    """The whole UI around one studio. Nothing per-user lives outside `gr.State`.

    `service`: the preprocessing models (default: the studio's, warmed up in the background). `library`:
    the photo examples (default: the dataset's, fetched in the background when not cached; the drawn
    examples are shown until they are there)."""
    if service is None:
        service = PreprocessingService(studio)
        service.warm_up_in_background()
    if library is None:
        library = examples_module.ExampleLibrary()
        library.start_background_fetch()
    library.cache_dir.mkdir(parents=True, exist_ok=True)
    # Served as they are (assets/ and the fetched photo examples), never expired from the cache.
    gr.set_static_paths([EXAMPLES_DIR, library.cache_dir])
    with gr.Blocks(title=APP_TITLE, delete_cache=(BUNDLE_MAX_AGE_S, BUNDLE_MAX_AGE_S)) as demo:
        page = build_page(studio, service, library)
        wire_events(demo, page, studio, service, library)
    return demo
