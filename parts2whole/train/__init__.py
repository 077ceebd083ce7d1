"""Training recipe for Parts2Whole: fine-tune the released checkpoint, by default its pose guider on
OpenPose-style maps rendered from DWPose keypoints (the checkpoint the official project never released).

Modules: config (YAML recipe), dataset (DeepFashion-MultiModal-Parts2Whole reader and download),
convert_dwpose (our pose maps for the dataset), references (per-sample shared attention),
objective (the loss), trainer (accelerate loop), export (official checkpoint layout),
validation (sample images), metrics and evaluate (paper metrics).
"""
