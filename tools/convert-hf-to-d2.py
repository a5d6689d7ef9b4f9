#!/usr/bin/env python
"""Converts a Hugging Face transformers checkpoint directory into this project's format.

    python tools/convert-hf-to-d2.py path/to/maskformer-swin-base-ade OUT_DIR
    python demo/demo.py --config-file OUT_DIR/config.yaml --input photo.jpg --output out.png \\
        --opts MODEL.WEIGHTS OUT_DIR/model.pth

HF_DIR is what `save_pretrained` writes (or a downloaded model repository): config.json, the
weights (model.safetensors or pytorch_model.bin, sharded or not) and preprocessor_config.json.
Supported: MaskFormerForInstanceSegmentation with a ResNet or Swin backbone, and
Mask2FormerForUniversalSegmentation once this project registers Mask2Former's modules. Writes
OUT_DIR/model.pth, OUT_DIR/config.yaml (a complete config of this project: model sizes, the
image processor's normalisation and test sizes, semantic inference) and OUT_DIR/metadata.json
(the class names of id2label, which the demo reads beside the config). Needs transformers
(pip install transformers) to read the checkpoint's config.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional


from mask_former.errors import UserError
from mask_former.hf_conversion import convert_hf_checkpoint

logger = logging.getLogger("mask_former_convert_hf")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="convert-hf-to-d2.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("hf_dir", metavar="HF_DIR", help="a transformers checkpoint directory")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where to write model.pth, config.yaml "
                        "and metadata.json (created if missing)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    try:
        cfg = convert_hf_checkpoint(args.hf_dir, args.out_dir)
    except UserError as error:
        logger.error(str(error))
        return 1
    out = Path(args.out_dir)
    logger.info(f"Wrote {out / 'model.pth'}, {out / 'config.yaml'} and {out / 'metadata.json'} "
                f"({cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} classes, backbone {cfg.MODEL.BACKBONE.NAME})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
