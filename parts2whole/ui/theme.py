"""How the app looks and what it says: title, intro, help texts, CSS, the Gradio theme and the page script."""

from __future__ import annotations

import gradio as gr

APP_TITLE = "Parts2Whole studio"

CSS = """
.slot-card { border-radius: 12px; }
.slot-card .mask-preview img { object-fit: contain; }
/* The "Used area" label sits above the picture, not over it: every pixel can be clicked. */
.slot-card .mask-preview { height: auto !important; }
.slot-card .mask-preview [data-testid="block-label"] { position: relative; top: 0; left: 0; margin-bottom: 4px; }
.slot-card .mask-preview .image-container { height: 190px; }
#tiny-model-banner { background: #fff4d6; border: 1px solid #e8c15a; border-radius: 10px; padding: 10px 14px; }
#tiny-model-banner p { margin: 0; color: #5b4300; }
#generate-button { min-height: 52px; font-size: 1.1em; }
#run-status p { margin: 0; }
.brush-hint p { margin: 0; font-size: 0.9em; }
.mask-message p, #pose-kind p { margin: 0; font-size: 0.9em; }
#examples-note p { margin: 0; font-size: 0.88em; color: #555; }
.click-mode { padding-top: 2px !important; padding-bottom: 2px !important; }
.click-mode .wrap { gap: 4px !important; }
.click-mode label { padding: 2px 8px !important; font-size: 0.88em; }
"""

INTRO = (
    f"# {APP_TITLE}\n"
    "Upload reference pictures of a person's parts (each optional, at least one) and a pose map, write a prompt, "
    "then press Generate. Under each part you see the area the model will use (found automatically): faded "
    "pixels are ignored. Click the picture to add to it or remove from it; *Edit mask* has a brush, "
    "background removal and more."
)

POSE_HELP = ("Drop a **Pose map** here (a DensePose map, coloured body parts on black, is what the released model "
             "reads), or make one from a **photo** of someone in the pose you want: the map drawn is the kind the "
             "loaded model reads (DensePose; an OpenPose-style DWPose skeleton for a model fine-tuned on those).")

GROUND_TRUTH_LABEL = "The real person · dataset photo (ground truth, not generated)"

#: Brush used to paint masks: a see-through magenta, so the part stays visible under it.
MASK_PAINT_COLOUR = "#ff2d95"
MASK_PAINT_OPACITY = 0.55

#: Names each upload field after its visible label (aria-label), so screen readers, and browser automation
#: such as `page.get_by_label("Face")`, find the right one. Gradio re-creates inputs, hence the observer.
LABEL_FILE_INPUTS_JS = """
() => {
  const name = () => document.querySelectorAll('input[type="file"]').forEach((input) => {
    const block = input.closest('.block');
    const title = block && block.querySelector('[data-testid="block-label"]');
    const text = title && title.textContent.trim();
    if (text && input.getAttribute('aria-label') !== text) input.setAttribute('aria-label', text);
  });
  new MutationObserver(name).observe(document.body, {subtree: true, childList: true});
  name();
}
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft()
