"""Preprocessing for Parts2Whole inputs. One module per job; heavy libraries (torch, transformers,
onnxruntime, rembg) are imported inside the functions that need them, so importing is cheap.

* :mod:`preprocess.images` - ``load_image``, ``load_rgb``, ``load_mask``, ``is_empty_mask``:
  safe loading of any upload (limits checked before decoding, EXIF, modes, clear errors).
* :mod:`preprocess.parsing` - ``auto_part_mask(image, label) -> PartMask``: part masks from the
  SegFormer clothes parser (``found`` / ``unsure`` / ``message`` for the UI).
* :mod:`preprocess.sam` - ``SamSegmenter.predict(image, ClickState) -> SamResult``: click-to-refine
  with Segment Anything; ``ClickState`` is the pure per-image state the UI keeps.
* :mod:`preprocess.pose` - ``estimate_pose``, ``render_pose_map``, ``pose_map_from_photo``,
  ``seed_points_for_part``: DWPose keypoints and OpenPose-style maps.
* :mod:`preprocess.parts` - ``select_part(image, label) -> PartSelection``: the parser, else
  pose-seeded SAM, else "click on it".
* :mod:`preprocess.densepose` - ``densepose_map(photo) -> DensePoseResult``: detectron2's DensePose
  R50-FPN in plain torch (IUV map of the most confident person; safe model-zoo pickle loading).
* :mod:`preprocess.structure` - ``structure_kind_of(image)``: DensePose, OpenPose or unknown map.
* :mod:`preprocess.background` - ``remove_background(image) -> RGBA``: rembg human segmentation.
* :mod:`preprocess.masks` - mask clean-up and conversions; :mod:`preprocess.weights` - the
  ``weights/`` folder and Hub downloads.
"""
