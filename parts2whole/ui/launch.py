"""Serving the app: the queue (as many generations at once as the studio has devices), uploads handed
to the handlers undecoded, upload and thread limits, Gradio's own login (--auth / P2W_AUTH), and the launch."""

from __future__ import annotations

import functools
import logging
import os

import gradio as gr

from parts2whole import studio as studio_module

from .demo import build_demo
from .settings import GPU_CONCURRENCY, MAX_QUEUE_SIZE
from .theme import CSS, LABEL_FILE_INPUTS_JS, theme

#: Largest upload the server accepts (Gradio refuses bigger files before they reach a handler).
MAX_UPLOAD_MB = 50
#: Gradio's worker threads for all handlers (the GPU queue is limited separately, see GPU_CONCURRENCY).
MAX_THREADS = 40
#: The concurrency id of the events that run on the model (Generate): as many at once as there are devices.
GPU_QUEUE = "gpu"
AUTH_ENV = "P2W_AUTH"
#: Addresses only this computer reaches: serving there needs no login.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

logger = logging.getLogger("parts2whole.app")


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """`USER:PASSWORD` (--auth, else P2W_AUTH) as Gradio's auth pair; None when neither is set."""
    value = value if value is not None else os.environ.get(AUTH_ENV)
    if not value:
        return None
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        raise ValueError(f"--auth (or {AUTH_ENV}) must be USER:PASSWORD, both non-empty.")
    return user.strip(), password


def exposure_warning(host: str, share: bool, auth: tuple[str, str] | None) -> str | None:
    """The warning for serving past this computer without a login (None when local, or with --auth).
    A Hugging Face Space (SPACE_ID) is public on purpose and gets none."""
    if auth or os.environ.get("SPACE_ID"):
        return None
    where = ("a public --share link" if share else f"{host} (reachable from other computers)"
             if host not in LOCAL_HOSTS else None)
    if where is None:
        return None
    return (f"Serving on {where} without a login: anyone who reaches it can use the app and its API. "
            f"Set --auth USER:PASSWORD (or {AUTH_ENV}) to require one.")


def queue(demo: gr.Blocks, gpu_concurrency: int = GPU_CONCURRENCY) -> gr.Blocks:
    """GPU work waits in line, `gpu_concurrency` at a time (one per device; MAX_QUEUE_SIZE may wait, more
    are turned away with "queue full"); cheap UI events (mask previews) have no limit and run beside it.
    Uploaded pictures reach the handlers undecoded (see `pass_uploads_undecoded`)."""
    pass_uploads_undecoded(demo)
    for fn in demo.fns.values():
        if fn.concurrency_id == GPU_QUEUE:
            fn.concurrency_limit = gpu_concurrency
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


def launch_kwargs(host: str, port: int, share: bool = False, auth: tuple[str, str] | None = None) -> dict:
    """How the app is served: uploads capped at MAX_UPLOAD_MB, errors as one-line messages (never a
    traceback), and nothing served outside Gradio's cache and assets/ (no `allowed_paths`); the cache is
    cleaned by the Blocks' `delete_cache`. `auth`: Gradio's login, for the page and the API alike."""
    return dict(server_name=host, server_port=port, share=share or None, css=CSS, theme=theme(),
                js=LABEL_FILE_INPUTS_JS, show_error=False, footer_links=["api", "gradio"],
                max_file_size=f"{MAX_UPLOAD_MB}mb", max_threads=MAX_THREADS, auth=auth)


def launch(studio: studio_module.Studio, *, host: str, port: int, share: bool = False,
           auth: tuple[str, str] | None = None) -> None:
    """Build the UI around `studio` (a Studio, or a pool or Ray handle with its `workers`) and serve it
    (blocks until the server stops)."""
    warning = exposure_warning(host, share, auth)
    if warning:
        logger.warning("⚠️ %s", warning)
    demo = queue(build_demo(studio), gpu_concurrency=getattr(studio, "workers", GPU_CONCURRENCY))
    demo.launch(**launch_kwargs(host, port, share, auth))
