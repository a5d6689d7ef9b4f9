"""Hugging Face transformers checkpoints as this project's (tools/convert-hf-to-d2.py).

`convert_hf_checkpoint(hf_dir, out_dir)` reads a `save_pretrained` directory, builds the config of
this project that has the same model, renames the weights by the architecture's table and
writes `out_dir/model.pth`, `out_dir/config.yaml` (a complete config, `cfg.dump()`) and
`out_dir/metadata.json` (the class names of `id2label`, see mask_former/data/metadata_file.py).
Each supported architecture is one module with `config_settings(hf_config)` and
`weight_renames(hf_config)` and its `DROPPED` names, listed in ARCHITECTURES.
"""
from .checkpoint import ConversionError
from .convert import ARCHITECTURES, convert_hf_checkpoint

__all__ = ["ARCHITECTURES", "ConversionError", "convert_hf_checkpoint"]
