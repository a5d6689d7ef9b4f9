"""ADE20K-150 tables that detectron2 lacks: class colours and the 100 instance categories.

Class names are detectron2's `ADE20K_SEM_SEG_CATEGORIES` (class index 0..149 = scene-parsing label
1..150). The instance-annotation release of the Places Challenge 2017
(`annotations_instance/*.png`: R = instance category 1..100, G = instance id) annotates 100 of the
150 classes; its category mapping file (ade20k_instance_catid_mapping.txt) pairs each instance
category with a scene-parsing class, and those 100 classes are the "things" of ADE20K panoptic.
"""
from typing import Dict, List

from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

# The scene-parsing benchmark's palette, by class index, as the official conversion writes it to
# ade20k_panoptic_*.json (Mask2Former's own table differs in one entry: skyscraper, 48, has road's
# colour there).
ADE20K_COLORS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 200), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)

# ADE20K_INSTANCE_CATEGORIES[k - 1] = (name, class index) of instance category k, the R value of
# annotations_instance/*.png; the names are the instance release's (imgCatIds.json).
ADE20K_INSTANCE_CATEGORIES = (
    ("bed", 7), ("windowpane", 8), ("cabinet", 10), ("person", 12),
    ("door", 14), ("table", 15), ("curtain", 18), ("chair", 19),
    ("car", 20), ("painting", 22), ("sofa", 23), ("shelf", 24),
    ("mirror", 27), ("armchair", 30), ("seat", 31), ("fence", 32),
    ("desk", 33), ("wardrobe", 35), ("lamp", 36), ("bathtub", 37),
    ("railing", 38), ("cushion", 39), ("box", 41), ("column", 42),
    ("signboard", 43), ("chest of drawers", 44), ("counter", 45), ("sink", 47),
    ("fireplace", 49), ("refrigerator", 50), ("stairs", 53), ("case", 55),
    ("pool table", 56), ("pillow", 57), ("screen door", 58), ("bookcase", 62),
    ("coffee table", 64), ("toilet", 65), ("flower", 66), ("book", 67),
    ("bench", 69), ("countertop", 70), ("stove", 71), ("palm", 72),
    ("kitchen island", 73), ("computer", 74), ("swivel chair", 75), ("boat", 76),
    ("arcade machine", 78), ("bus", 80), ("towel", 81), ("light", 82),
    ("truck", 83), ("chandelier", 85), ("awning", 86), ("streetlight", 87),
    ("booth", 88), ("television receiver", 89), ("airplane", 90), ("apparel", 92),
    ("pole", 93), ("bannister", 95), ("ottoman", 97), ("bottle", 98),
    ("van", 102), ("ship", 103), ("fountain", 104), ("washer", 107),
    ("plaything", 108), ("stool", 110), ("barrel", 111), ("basket", 112),
    ("bag", 115), ("minibike", 116), ("oven", 118), ("ball", 119),
    ("food", 120), ("step", 121), ("trade name", 123), ("microwave", 124),
    ("pot", 125), ("animal", 126), ("bicycle", 127), ("dishwasher", 129),
    ("screen", 130), ("sculpture", 132), ("hood", 133), ("sconce", 134),
    ("vase", 135), ("traffic light", 136), ("tray", 137), ("ashcan", 138),
    ("fan", 139), ("plate", 142), ("monitor", 143), ("bulletin board", 144),
    ("radiator", 146), ("glass", 147), ("clock", 148), ("flag", 149),
)

# Class indices of the things: the classes that instance categories map to.
ADE20K_THING_CLASSES = frozenset(class_index for _, class_index in ADE20K_INSTANCE_CATEGORIES)


def ade20k_panoptic_categories() -> List[Dict]:
    """The `categories` of ade20k_panoptic_*.json: the 150 classes, id = class index."""
    return [
        {"id": i, "name": name, "isthing": int(i in ADE20K_THING_CLASSES),
         "color": list(ADE20K_COLORS[i])}
        for i, name in enumerate(ADE20K_SEM_SEG_CATEGORIES)
    ]


def ade20k_instance_categories() -> List[Dict]:
    """The `categories` of ade20k_instance_*.json: the 100 things, id = class index (as Mask2Former's
    `ade20k_instance_*` datasets expect), named as in the instance release."""
    return [{"id": class_index, "name": name} for name, class_index in ADE20K_INSTANCE_CATEGORIES]
