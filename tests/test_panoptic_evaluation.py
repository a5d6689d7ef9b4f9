"""Panoptic quality: hand-computed cases, panopticapi's VOID/crowd rules, the detectron2 evaluator
end to end, and a brute-force cross-check on random id maps."""
import json
import re
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from mask_former.evaluation import (
    PanopticQualityEvaluator,
    PanopticQualityStats,
    image_panoptic_stats,
    panoptic_quality,
)
from mask_former.evaluation import panoptic_evaluation
from mask_former.data.io import DataError, id_to_rgb
from helpers import truncate

# Dataset category ids, as panopticapi sees them.
CAT, DOG, PERSON = 1, 2, 3
SKY, GRASS, ROAD = 10, 11, 12
CATEGORIES = {
    CAT: {"isthing": True, "name": "cat"},
    DOG: {"isthing": True, "name": "dog"},
    PERSON: {"isthing": True, "name": "person"},
    SKY: {"isthing": False, "name": "sky"},
    GRASS: {"isthing": False, "name": "grass"},
    ROAD: {"isthing": False, "name": "road"},
}


def strip(length, *spans):
    """A (1, length) id map: `spans` are (id, start, stop) half-open pixel ranges, the rest 0."""
    ids = np.zeros((1, length), dtype=np.int64)
    for segment_id, start, stop in spans:
        ids[0, start:stop] = segment_id
    return ids


def segments(*entries):
    """segments_info from (id, category_id) or (id, category_id, iscrowd) tuples."""
    return [{"id": e[0], "category_id": e[1], "iscrowd": e[2] if len(e) > 2 else 0}
            for e in entries]


def quality(gt_ids, gt_segments, pred_ids, pred_segments):
    return panoptic_quality([(gt_ids, gt_segments, pred_ids, pred_segments)], CATEGORIES)


def counts(result, category_id):
    entry = result["per_category"][category_id]
    return entry["tp"], entry["fp"], entry["fn"]


def test_perfect_prediction():
    gt = strip(100, (1, 0, 10), (2, 10, 30), (3, 30, 100))
    gt_segments = segments((1, CAT), (2, DOG), (3, SKY))
    # Different ids for the same segments: only the pixels and categories matter.
    pred = strip(100, (7, 0, 10), (8, 10, 30), (9, 30, 100))
    pred_segments = segments((7, CAT), (8, DOG), (9, SKY))
    result = quality(gt, gt_segments, pred, pred_segments)
    for group in ("All", "Things", "Stuff"):
        assert result[group]["pq"] == result[group]["sq"] == result[group]["rq"] == 1.0
    assert (result["All"]["n"], result["Things"]["n"], result["Stuff"]["n"]) == (3, 2, 1)


def test_hand_computed_things_and_stuff():
    gt = strip(
        100,
        (1, 0, 10),    # cat
        (2, 10, 20),   # dog, predicted
        (3, 20, 30),   # dog, missed
        (4, 30, 80),   # sky
        (5, 80, 100),  # grass, predicted as road
    )
    gt_segments = segments((1, CAT), (2, DOG), (3, DOG), (4, SKY), (5, GRASS))
    pred = strip(
        100,
        (1, 0, 8),     # cat: 8 of the GT's 10 pixels, nothing else -> IoU 8 / 10 = 0.8
        (2, 10, 16),   # dog: 6 of 10 -> IoU 6 / 10 = 0.6
        (3, 30, 35),   # a cat on the sky: a false positive
        (4, 35, 80),   # sky: 45 of 50 -> IoU 45 / 50 = 0.9
        (5, 80, 100),  # road where the GT is grass: FP for road, FN for grass
    )
    pred_segments = segments((1, CAT), (2, DOG), (3, CAT), (4, SKY), (5, ROAD))
    result = quality(gt, gt_segments, pred, pred_segments)

    # Things. cat: TP 1 (IoU 0.8), FP 1; dog: TP 1 (IoU 0.6), FN 1.
    cat_pq, cat_sq, cat_rq = 0.8 / (1 + 0.5 * 1), 0.8 / 1, 1 / (1 + 0.5 * 1)
    dog_pq, dog_sq, dog_rq = 0.6 / (1 + 0.5 * 1), 0.6 / 1, 1 / (1 + 0.5 * 1)
    assert counts(result, CAT) == (1, 1, 0) and counts(result, DOG) == (1, 0, 1)
    assert result["per_category"][CAT]["pq"] == pytest.approx(cat_pq)
    assert result["per_category"][DOG]["pq"] == pytest.approx(dog_pq)
    things = result["Things"]
    assert things["n"] == 2  # person never occurs
    assert things["pq"] == pytest.approx((cat_pq + dog_pq) / 2)  # = (0.5333 + 0.4) / 2
    assert things["sq"] == pytest.approx((0.8 + 0.6) / 2)  # = 0.7
    assert things["rq"] == pytest.approx(2 / 3)  # = TP / (TP + FP/2 + FN/2) = 2 / (2 + 0.5 + 0.5)

    # Stuff. sky: TP 1 (IoU 0.9); grass: FN 1; road: FP 1 (both PQ = SQ = RQ = 0).
    assert counts(result, SKY) == (1, 0, 0)
    assert counts(result, GRASS) == (0, 0, 1) and counts(result, ROAD) == (0, 1, 0)
    stuff = result["Stuff"]
    assert stuff["n"] == 3
    assert stuff["pq"] == pytest.approx((0.9 + 0 + 0) / 3)
    assert stuff["sq"] == pytest.approx((0.9 + 0 + 0) / 3)
    assert stuff["rq"] == pytest.approx((1 + 0 + 0) / 3)

    # All: the mean over the five categories that occur.
    assert result["All"]["n"] == 5
    assert result["All"]["pq"] == pytest.approx((cat_pq + dog_pq + 0.9 + 0 + 0) / 5)
    assert result["All"]["sq"] == pytest.approx((cat_sq + dog_sq + 0.9 + 0 + 0) / 5)
    assert result["All"]["rq"] == pytest.approx((cat_rq + dog_rq + 1 + 0 + 0) / 5)


def test_iou_of_exactly_one_half_is_not_a_match():
    gt = strip(20, (1, 0, 10), (2, 10, 20))
    gt_segments = segments((1, CAT), (2, SKY))
    # cat: intersection 5, union 10 -> IoU 0.5: an FP and an FN, not a TP.
    pred = strip(20, (1, 0, 5), (2, 5, 20))
    result = quality(gt, gt_segments, pred, segments((1, CAT), (2, SKY)))
    assert counts(result, CAT) == (0, 1, 1)
    assert result["per_category"][CAT]["pq"] == 0.0
    # One more pixel: intersection 6, union 10 -> IoU 0.6, a match.
    pred = strip(20, (1, 0, 6), (2, 6, 20))
    result = quality(gt, gt_segments, pred, segments((1, CAT), (2, SKY)))
    assert counts(result, CAT) == (1, 0, 0)
    assert result["per_category"][CAT]["iou"] == pytest.approx(0.6)


def test_void_pixels_are_left_out_of_the_union():
    # GT: a cat on 0..10, VOID on 10..20. The prediction has 6 cat pixels and 10 on VOID.
    gt = strip(20, (1, 0, 10))
    pred = strip(20, (1, 0, 6), (1, 10, 20))
    result = quality(gt, segments((1, CAT)), pred, segments((1, CAT)))
    # Plain IoU 6 / 20 = 0.3; without the 10 VOID pixels the union is 10 -> IoU 0.6, a match.
    assert counts(result, CAT) == (1, 0, 0)
    assert result["per_category"][CAT]["iou"] == pytest.approx(0.6)


def test_prediction_mostly_on_void_is_not_a_false_positive():
    gt = strip(20, (1, 0, 14))  # sky, then 6 VOID pixels
    # A dog of 10 pixels, 6 on VOID (> half): ignored. One of 12 with 6 on VOID (= half): an FP.
    pred = strip(20, (1, 0, 10), (2, 10, 20))
    result = quality(gt, segments((1, SKY)), pred, segments((1, SKY), (2, DOG)))
    assert DOG not in result["per_category"]
    pred = strip(20, (1, 0, 8), (2, 8, 20))
    result = quality(gt, segments((1, SKY)), pred, segments((1, SKY), (2, DOG)))
    assert counts(result, DOG) == (0, 1, 0)


def test_crowd_regions():
    # GT: a crowd of people on 0..10, a person on 10..20, grass on 20..40, VOID on 40..44.
    gt = strip(44, (1, 0, 10), (2, 10, 20), (3, 20, 40))
    gt_segments = segments((1, PERSON, 1), (2, PERSON), (3, GRASS))
    pred = strip(
        44,
        (1, 2, 10), (1, 20, 23),  # a person, 8 of its 11 pixels on the crowd (IoU 8/13 > 0.5)
        (2, 10, 20),              # the person, exactly
        (3, 0, 2), (3, 23, 24),   # a cat, 2 of 3 pixels on the (person) crowd
        (4, 24, 40),              # grass
        (5, 40, 44),              # a dog entirely on VOID
    )
    pred_segments = segments((1, PERSON), (2, PERSON), (3, CAT), (4, GRASS), (5, DOG))
    result = quality(gt, gt_segments, pred, pred_segments)
    # The crowd is neither matched nor a false negative; the prediction mostly on it is ignored.
    assert counts(result, PERSON) == (1, 0, 0)
    # Only crowds of the prediction's own category are ignored regions.
    assert counts(result, CAT) == (0, 1, 0)
    assert DOG not in result["per_category"]


def test_void_and_crowd_together_decide_a_false_positive():
    # GT: a crowd of people on 0..3, sky on 3..17, VOID on 17..20.
    gt = strip(20, (1, 0, 3), (2, 3, 17))
    gt_segments = segments((1, PERSON, 1), (2, SKY))
    # A person of 10 pixels: 3 on the crowd, 4 on sky, 3 on VOID. Neither the crowd (3/10) nor
    # VOID (3/10) alone is more than half of it, together (6/10) they are: ignored.
    pred = strip(20, (1, 0, 7), (2, 7, 17), (1, 17, 20))
    result = quality(gt, gt_segments, pred, segments((1, PERSON), (2, SKY)))
    assert PERSON not in result["per_category"]
    # The same prediction as a dog: the person crowd is not its own category, 3/10 -> an FP.
    result = quality(gt, gt_segments, pred, segments((1, DOG), (2, SKY)))
    assert counts(result, DOG) == (0, 1, 0)


def test_categories_that_never_occur_are_left_out_of_the_averages():
    gt = strip(30, (1, 0, 10), (2, 10, 30))
    gt_segments = segments((1, CAT), (2, SKY))
    pred = strip(30, (1, 0, 10), (2, 10, 30))
    result = quality(gt, gt_segments, pred, segments((1, CAT), (2, SKY)))
    # Dog, person, grass and road are in CATEGORIES but in neither GT nor prediction.
    assert set(result["per_category"]) == {CAT, SKY}
    assert result["Things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert result["All"]["n"] == 2 and result["All"]["pq"] == 1.0
    # A category occurring only as a missed GT segment does count, with PQ 0.
    gt = strip(30, (1, 0, 10), (2, 10, 20), (3, 20, 30))
    pred = strip(30, (1, 0, 10), (2, 10, 30))
    result = quality(gt, segments((1, CAT), (2, SKY), (3, DOG)), pred,
                     segments((1, CAT), (2, SKY)))
    assert result["Things"]["n"] == 2 and result["Things"]["pq"] == pytest.approx(0.5)


def test_inconsistent_prediction_is_an_error():
    gt = strip(10, (1, 0, 10))
    with pytest.raises(ValueError, match="not in segments_info"):
        quality(gt, segments((1, SKY)), strip(10, (1, 0, 5), (2, 5, 10)), segments((1, SKY)))
    with pytest.raises(ValueError, match="not in the id map"):
        quality(gt, segments((1, SKY)), strip(10, (1, 0, 10)), segments((1, SKY), (2, CAT)))
    with pytest.raises(ValueError, match="unknown category_id"):
        quality(gt, segments((1, SKY)), strip(10, (1, 0, 10)), segments((1, 99)))


# ---- the detectron2 evaluator

# Dataset ids -> contiguous ids, as detectron2's COCO panoptic registration has them: one
# contiguous space for things and stuff, both class lists holding every class.
THING_MAP = {CAT: 0, DOG: 1}
STUFF_MAP = {SKY: 2, GRASS: 3}
CLASS_NAMES = ["cat", "dog", "sky", "grass"]
LABEL_DIVISOR = 1000


def make_image(rng, size=24):
    """A GT id map (ids above 255 to exercise the RGB encoding), its segments in dataset ids."""
    gt = np.zeros((size, size), dtype=np.int64)
    gt[: size // 2] = 300        # sky
    gt[size // 2:] = 70000       # grass
    gt[:, -2:] = 0               # VOID
    gt_segments = [{"id": 300, "category_id": SKY, "iscrowd": 0},
                   {"id": 70000, "category_id": GRASS, "iscrowd": 0}]
    for index in range(3):
        y, x = rng.integers(0, size - 8, size=2)
        segment_id = 1000 + index
        gt[y:y + rng.integers(4, 9), x:x + rng.integers(4, 9)] = segment_id
        gt_segments.append({"id": segment_id, "category_id": [CAT, DOG][index % 2],
                            "iscrowd": int(index == 2)})
    present = set(np.unique(gt).tolist())
    return gt, [s for s in gt_segments if s["id"] in present]


def make_prediction(rng, gt, gt_segments):
    """A noisy copy of the GT as a model output's (ids, segments_info in contiguous ids)."""
    category = {s["id"]: s["category_id"] for s in gt_segments}
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.25
    pred[noise] = rng.choice(list(category), size=int(noise.sum()))
    pred[pred == 0] = 300  # no VOID in the prediction: the model labels every pixel
    info = []
    for new_id, old_id in enumerate(np.unique(pred).tolist(), start=1):
        dataset_id = category[old_id]
        if rng.random() < 0.2:
            dataset_id = CAT if dataset_id == DOG else DOG if dataset_id == CAT else dataset_id
        isthing = dataset_id in THING_MAP
        contiguous = THING_MAP[dataset_id] if isthing else STUFF_MAP[dataset_id]
        info.append({"id": new_id, "category_id": contiguous, "isthing": isthing})
        pred[pred == old_id] = -new_id
    return -pred, info


@pytest.fixture
def tiny_dataset(tmp_path):
    """A registered 4-image panoptic dataset, and per image (input, output, GT in dataset ids)."""
    rng = np.random.default_rng(0)
    contiguous = {**THING_MAP, **STUFF_MAP}
    dataset_dicts, samples = [], []
    for image_id in range(4):
        gt, gt_segments = make_image(rng)
        path = tmp_path / f"{image_id:04d}.png"
        Image.fromarray(id_to_rgb(gt)).save(path)
        dataset_dicts.append({
            "file_name": str(tmp_path / f"{image_id:04d}.jpg"),
            "image_id": image_id,
            "pan_seg_file_name": str(path),
            "segments_info": [dict(s, category_id=contiguous[s["category_id"]],
                                   isthing=s["category_id"] in THING_MAP) for s in gt_segments],
        })
        pred, info = make_prediction(rng, gt, gt_segments)
        samples.append((gt, gt_segments, pred, info))
    name = f"test_panoptic_quality_{uuid.uuid4().hex}"
    DatasetCatalog.register(name, lambda: dataset_dicts)
    MetadataCatalog.get(name).set(
        thing_classes=CLASS_NAMES, stuff_classes=CLASS_NAMES,
        thing_dataset_id_to_contiguous_id=THING_MAP, stuff_dataset_id_to_contiguous_id=STUFF_MAP,
        label_divisor=LABEL_DIVISOR,
    )
    yield name, dataset_dicts, samples
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def model_outputs(samples):
    to_dataset = {v: k for k, v in {**THING_MAP, **STUFF_MAP}.items()}
    outputs = []
    for _, _, pred, info in samples:
        outputs.append({"panoptic_seg": (torch.from_numpy(pred).int(), info)})
    expected = []
    for gt, gt_segments, pred, info in samples:
        pred_segments = [{"id": s["id"], "category_id": to_dataset[s["category_id"]]} for s in info]
        expected.append((gt, gt_segments, pred, pred_segments))
    return outputs, expected


def test_evaluator_end_to_end(tiny_dataset, tmp_path):
    name, dataset_dicts, samples = tiny_dataset
    outputs, expected_inputs = model_outputs(samples)
    evaluator = PanopticQualityEvaluator(name, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    # Batches of two; the first matched by file_name, the second by image_id only.
    inputs = [{"file_name": d["file_name"], "image_id": d["image_id"]} for d in dataset_dicts]
    inputs[2:] = [{"image_id": d["image_id"]} for d in dataset_dicts[2:]]
    evaluator.process(inputs[:2], outputs[:2])
    evaluator.process(inputs[2:], outputs[2:])
    results = evaluator.evaluate()

    expected = panoptic_quality(expected_inputs, {
        CAT: {"isthing": True, "name": "cat"}, DOG: {"isthing": True, "name": "dog"},
        SKY: {"isthing": False, "name": "sky"}, GRASS: {"isthing": False, "name": "grass"},
    })
    assert list(results) == ["panoptic_seg"]
    metrics = results["panoptic_seg"]
    assert set(metrics) == {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert metrics[key.upper() + suffix] == pytest.approx(100 * expected[group][key])
    # Not a degenerate case: some matches, some misses.
    assert 0 < metrics["PQ"] < 100 and 0 < metrics["PQ_th"] < 100
    saved = json.loads((tmp_path / "eval" / "panoptic_quality.json").read_text())
    assert saved["All"]["pq"] == pytest.approx(expected["All"]["pq"])
    assert saved["per_category"][str(CAT)]["name"] == "cat"


def test_evaluator_reads_label_divisor_encoding(tiny_dataset):
    """segments_info None: ids are contiguous category * label_divisor + instance, -1 VOID."""
    name, dataset_dicts, samples = tiny_dataset
    outputs, _ = model_outputs(samples)
    encoded_outputs = []
    for output in outputs:
        ids, info = output["panoptic_seg"]
        encoded = torch.full_like(ids, -1)
        for s in info:
            encoded[ids == s["id"]] = s["category_id"] * LABEL_DIVISOR + s["id"]
        encoded_outputs.append({"panoptic_seg": (encoded, None)})
    inputs = [{"file_name": d["file_name"], "image_id": d["image_id"]} for d in dataset_dicts]

    direct = PanopticQualityEvaluator(name)
    direct.process(inputs, outputs)
    encoded = PanopticQualityEvaluator(name)
    encoded.process(inputs, encoded_outputs)
    assert encoded.evaluate()["panoptic_seg"] == pytest.approx(direct.evaluate()["panoptic_seg"])


def test_evaluators_of_two_workers_merge_to_one(tiny_dataset, monkeypatch):
    name, dataset_dicts, samples = tiny_dataset
    outputs, _ = model_outputs(samples)
    inputs = [{"file_name": d["file_name"], "image_id": d["image_id"]} for d in dataset_dicts]

    single = PanopticQualityEvaluator(name)
    single.process(inputs, outputs)
    expected = single.evaluate()

    # Worker 0 evaluates images 0 and 2, worker 1 images 1 and 3; gather hands worker 0 both.
    worker0, worker1 = PanopticQualityEvaluator(name), PanopticQualityEvaluator(name)
    worker0.process(inputs[0::2], outputs[0::2])
    worker1.process(inputs[1::2], outputs[1::2])
    monkeypatch.setattr(panoptic_evaluation.comm, "gather",
                        lambda data, dst=0, group=None: [data, worker1.stats])
    results = worker0.evaluate()
    assert results["panoptic_seg"] == pytest.approx(expected["panoptic_seg"])
    merged = PanopticQualityStats.merged([worker0.stats, worker1.stats])
    assert merged.num_images == single.stats.num_images == 4
    for category_id, stats in single.stats.per_category.items():
        other = merged.per_category[category_id]
        assert (other.tp, other.fp, other.fn) == (stats.tp, stats.fp, stats.fn)
        assert other.iou == pytest.approx(stats.iou)


def test_evaluator_without_images_returns_nothing(tiny_dataset):
    assert PanopticQualityEvaluator(tiny_dataset[0]).evaluate() == {}


# ---- bad ground truth: refused, naming the files


def process_first(tiny_dataset):
    name, dataset_dicts, samples = tiny_dataset
    outputs, _ = model_outputs(samples)
    record = dataset_dicts[0]
    PanopticQualityEvaluator(name).process([{"file_name": record["file_name"]}], outputs[:1])


def test_gt_png_of_another_size_names_both_files(tiny_dataset):
    record = tiny_dataset[1][0]
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(record["pan_seg_file_name"])
    with pytest.raises(DataError) as error:
        process_first(tiny_dataset)
    assert str(error.value) == (f"panoptic PNG {record['pan_seg_file_name']!r} is 24x20 (WxH) but "
                                f"its image {record['file_name']!r} is 24x24")


def test_truncated_gt_png_is_named(tiny_dataset):
    record = tiny_dataset[1][0]
    truncate(record["pan_seg_file_name"])
    with pytest.raises(DataError, match=re.escape(
            f"cannot read panoptic PNG {record['pan_seg_file_name']!r} (dataset entry of image "
            f"{record['file_name']!r}): OSError: ")):
        process_first(tiny_dataset)


def test_gt_segment_of_unknown_category_names_the_file(tiny_dataset):
    record = tiny_dataset[1][0]
    record["segments_info"][0]["category_id"] = 42
    with pytest.raises(DataError) as error:
        process_first(tiny_dataset)
    assert str(error.value) == (
        f"panoptic PNG {record['pan_seg_file_name']!r} (dataset entry of image "
        f"{record['file_name']!r}) has a segment whose contiguous stuff category id 42 is not in "
        f"{tiny_dataset[0]}'s stuff_dataset_id_to_contiguous_id")


# ---- brute-force cross-check


def brute_force_counts(gt, gt_segments, pred, pred_segments):
    """Per-category [tp, fp, fn, iou sum] from boolean masks, pair by pair."""
    void = gt == 0
    totals = {}

    def entry(category_id):
        return totals.setdefault(category_id, [0, 0, 0, 0.0])

    matched_gt, matched_pred = set(), set()
    for g in gt_segments:
        for p in pred_segments:
            if g["iscrowd"] or g["category_id"] != p["category_id"]:
                continue
            gt_mask, pred_mask = gt == g["id"], pred == p["id"]
            intersection = np.logical_and(gt_mask, pred_mask).sum()
            union = np.logical_or(gt_mask, pred_mask).sum() - np.logical_and(pred_mask, void).sum()
            if union > 0 and intersection / union > 0.5:
                entry(g["category_id"])[0] += 1
                entry(g["category_id"])[3] += intersection / union
                matched_gt.add(g["id"])
                matched_pred.add(p["id"])
    for g in gt_segments:
        if g["id"] not in matched_gt and not g["iscrowd"]:
            entry(g["category_id"])[2] += 1
    for p in pred_segments:
        if p["id"] in matched_pred:
            continue
        pred_mask = pred == p["id"]
        ignored = void.copy()
        for g in gt_segments:
            if g["iscrowd"] and g["category_id"] == p["category_id"]:
                ignored |= gt == g["id"]
        if np.logical_and(pred_mask, ignored).sum() / pred_mask.sum() <= 0.5:
            entry(p["category_id"])[1] += 1
    return totals


def random_image(rng):
    """A blocky GT with VOID and crowds, and a prediction that is a noisy, relabelled copy."""
    coarse = rng.integers(0, 7, size=(5, 5))
    gt = np.kron(coarse, np.ones((4, 4), dtype=np.int64))[: rng.integers(14, 21)]
    category_ids = list(CATEGORIES)
    gt_segments = [
        {"id": int(i), "category_id": int(rng.choice(category_ids)),
         "iscrowd": int(rng.random() < 0.2)}
        for i in np.unique(gt) if i != 0
    ]
    pred = gt * 10 + 5  # new ids; old VOID becomes a segment (id 5) too
    noise = rng.random(gt.shape) < rng.uniform(0.0, 0.5)
    pred[noise] = rng.choice(np.unique(pred), size=int(noise.sum()))
    pred[rng.random(gt.shape) < 0.05] = 0  # some unlabelled (VOID) predicted pixels
    gt_category = {s["id"]: s["category_id"] for s in gt_segments}
    pred_segments = []
    for i in np.unique(pred):
        if i == 0:
            continue
        category_id = gt_category.get((int(i) - 5) // 10)
        if category_id is None or rng.random() < 0.25:
            category_id = int(rng.choice(category_ids))
        pred_segments.append({"id": int(i), "category_id": category_id})
    return gt, gt_segments, pred, pred_segments


def test_matches_brute_force_on_random_images():
    rng = np.random.default_rng(2024)
    images = [random_image(rng) for _ in range(60)]
    reference = {}
    for image in images:
        for category_id, values in brute_force_counts(*image).items():
            total = reference.setdefault(category_id, [0, 0, 0, 0.0])
            for k in range(4):
                total[k] += values[k]
        # Per image as well, so that a compensating error cannot hide in the sums.
        stats = image_panoptic_stats(*image, categories=CATEGORIES)
        for category_id, (tp, fp, fn, iou) in brute_force_counts(*image).items():
            got = stats.per_category.get(category_id)
            assert (got.tp, got.fp, got.fn) == (tp, fp, fn)
            assert got.iou == pytest.approx(iou)

    result = panoptic_quality(images, CATEGORIES)
    reference = {c: v for c, v in reference.items() if v[0] + v[1] + v[2] > 0}
    assert set(result["per_category"]) == set(reference)
    expected_quality = {}
    for category_id, (tp, fp, fn, iou) in reference.items():
        got = result["per_category"][category_id]
        assert (got["tp"], got["fp"], got["fn"]) == (tp, fp, fn)
        assert got["iou"] == pytest.approx(iou)
        expected_quality[category_id] = (
            iou / (tp + fp / 2 + fn / 2), iou / tp if tp else 0.0, tp / (tp + fp / 2 + fn / 2)
        )
        assert (got["pq"], got["sq"], got["rq"]) == pytest.approx(expected_quality[category_id])
    for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        members = [c for c in expected_quality
                   if isthing is None or CATEGORIES[c]["isthing"] == isthing]
        assert result[group]["n"] == len(members)
        for k, key in enumerate(("pq", "sq", "rq")):
            mean = sum(expected_quality[c][k] for c in members) / len(members)
            assert result[group][key] == pytest.approx(mean)
    # The random images do exercise every rule.
    totals = np.array([v[:3] for v in reference.values()]).sum(0)
    assert (totals > 20).all()
