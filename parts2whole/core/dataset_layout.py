"""Facts of the Hub dataset `huanngzh/DeepFashion-MultiModal-Parts2Whole`, shared by the photo examples
(parts2whole.examples) and the training data reader (parts2whole.train.dataset)."""

HUB_DATASET_ID = "huanngzh/DeepFashion-MultiModal-Parts2Whole"
#: Folder of each part label in the dataset (one zip each: `<folder>.zip`).
PART_FOLDERS = {
    "face": "face",
    "hair or headwear": "hair_headwear",
    "upper body clothes": "upper_body_clothes",
    "lower body clothes": "lower_body_clothes",
    "whole body clothes": "whole_body_clothes",
    "shoes": "shoes",
}
