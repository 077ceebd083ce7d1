"""Serving the app: the queue, uploads handed to the handlers undecoded, upload and thread limits, and
the launch itself."""

from __future__ import annotations

import functools

import gradio as gr

from parts2whole import studio as studio_module

from .demo import build_demo
from .settings import GPU_CONCURRENCY, MAX_QUEUE_SIZE
from .theme import CSS, LABEL_FILE_INPUTS_JS, theme

#: Largest upload the server accepts (Gradio refuses bigger files before they reach a handler).
MAX_UPLOAD_MB = 50
#: Gradio's worker threads for all handlers (the GPU queue is limited separately, see GPU_CONCURRENCY).
MAX_THREADS = 40


def queue(demo: gr.Blocks) -> gr.Blocks:
    """GPU work waits in line, GPU_CONCURRENCY at a time (MAX_QUEUE_SIZE may wait; more are turned away
    with "queue full"); cheap UI events (mask previews) have no limit and run beside it.
    Uploaded pictures reach the handlers undecoded (see `pass_uploads_undecoded`)."""
    pass_uploads_undecoded(demo)
    return demo.queue(default_concurrency_limit=GPU_CONCURRENCY, max_size=MAX_QUEUE_SIZE)


def pass_uploads_undecoded(demo: gr.Blocks) -> None:
    """Hand every file-path image input to the handlers as the uploaded file, without Gradio decoding it.

    Gradio's own preprocessing opens each upload with PIL (and converts a mask to "L", decoding every
    pixel) before a handler runs: a text file, a PDF or a zero-byte upload then fails inside Gradio with
    an anonymous error, and a decompression bomb is decoded. Our loaders (preprocess.images, through
    `uploads.Uploads`) check the header, the pixel limit and the format first and say what is wrong, so
    they get the file as it is, and decode it once per session.
    """
    for block in demo.blocks.values():
        if isinstance(block, gr.Image) and block.type == "filepath" and not getattr(block, "_undecoded", False):
            block.preprocess = functools.partial(_undecoded_image, block.preprocess)
            block._undecoded = True


def _undecoded_image(gradio_preprocess, payload):
    if payload is None:
        return None
    url, path = getattr(payload, "url", None) or "", getattr(payload, "path", None)
    if path and not url.startswith("data:"):
        return str(path)  # already in Gradio's upload cache
    return gradio_preprocess(payload)


def launch_kwargs(host: str, port: int, share: bool = False) -> dict:
    """How the app is served: uploads capped at MAX_UPLOAD_MB, errors as one-line messages (never a
    traceback), and nothing served outside Gradio's cache and assets/ (no `allowed_paths`); the cache is
    cleaned by the Blocks' `delete_cache`."""
    return dict(server_name=host, server_port=port, share=share or None, css=CSS, theme=theme(),
                js=LABEL_FILE_INPUTS_JS, show_error=False, footer_links=["api", "gradio"],
                max_file_size=f"{MAX_UPLOAD_MB}mb", max_threads=MAX_THREADS)


def launch(studio: studio_module.Studio, *, host: str, port: int, share: bool = False) -> None:
    """Build the UI around `studio` and serve it (blocks until the server stops)."""
    queue(build_demo(studio)).launch(**launch_kwargs(host, port, share))
