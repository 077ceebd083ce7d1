"""Parts2Whole studio: the web app. The entry Spaces and `make run` start; the UI is `parts2whole.ui`.

Run `python app.py` (or `make run`) and open http://127.0.0.1:7860. Options: `--weights` (Hub id, folder
or "tiny"), `--share` for a public link, `--host`/`--port` (or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
Every event people may script has an `api_name`, so `gradio_client` can call `/generate`, and the
preprocessing tools: `/<part>_auto_mask`, `/<part>_click`, `/<part>_undo_click`, `/<part>_remove_background`
(part = face, hair_or_headwear, upper_body_clothes, ...), `/pose_from_photo` (the kind of map the model reads),
`/pose_densepose_from_photo`, `/pose_openpose_from_photo`, `/pose_upload`, `/pose_kind`.
Serving on several GPUs (`--devices all`) or machines (`--engine ray`), and `--auth`: docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

# Downloads go to this checkout's weights/ (the rule is in parts2whole/core/weights.py: an installed library
# defaults to the user cache, a checkout to its own weights/; `make` sets the same). Set before anything reads it.
os.environ.setdefault("P2W_WEIGHTS_DIR", str(Path(__file__).resolve().parent / "weights"))

if os.environ.get("SPACES_ZERO_GPU"):  # Hugging Face ZeroGPU: `spaces` must be imported before torch uses CUDA
    import spaces  # noqa: F401

from PIL import Image  # noqa: E402 - after the environment above

from parts2whole import serve, ui  # noqa: E402
from parts2whole.core.errors import Parts2WholeInputError  # noqa: E402
from parts2whole.core.limits import MAX_IMAGE_PIXELS  # noqa: E402
from parts2whole.serve import options as serve_options  # noqa: E402
from parts2whole.ui.launch import AUTH_ENV, parse_auth  # noqa: E402
from parts2whole.ui.theme import APP_TITLE  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{APP_TITLE}: the web app. Opens on http://{DEFAULT_HOST}:{DEFAULT_PORT}.")
    parser.add_argument("--weights", default=None,
                        help="Hub id, local folder, or 'tiny' (default: P2W_WEIGHTS, else the official weights; "
                             "falls back to 'tiny' when the Hub is unreachable)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST,
                        help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for everyone)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT),
                        help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help=f"require this login for the page and the API (default: {AUTH_ENV}; none)")
    serve_options.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.auth = parse_auth(args.auth)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every local request
    args = parse_args(argv)
    # This process serves people: PIL refuses to open anything above twice this (Gradio's own image handling
    # included); our loaders refuse above the limit itself, from the header.
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        studio = serve_options.build_studio(args)  # one studio here, a pool of device workers, or Ray Serve
    except Parts2WholeInputError as error:
        raise SystemExit(f"error: {error}") from None
    weights = studio.weights  # resolve now: downloads, or one line saying why the tiny model is used
    print(f"Weights: {weights.name}" + (" - outputs are noise, not portraits" if weights.is_tiny else ""), flush=True)
    if studio.device_choice.zero_gpu:
        studio.pipeline()  # ZeroGPU: load on CPU at start; each generation moves it to the GPU
    try:
        ui.launch(studio, host=args.host, port=args.port, share=args.share, auth=args.auth)
    finally:
        if isinstance(studio, serve.RemoteStudio):
            studio.close()


if __name__ == "__main__":
    main()
