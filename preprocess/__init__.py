"""Preprocessing for Parts2Whole inputs: safe image loading, automatic part masks (SegFormer human
parsing), click-to-refine masks (Segment Anything), whole-body pose maps (DWPose), structure-map
checks and background removal.

Heavy libraries (torch, transformers, onnxruntime, rembg) are imported inside the functions that
need them, so ``import preprocess`` stays fast.
"""
