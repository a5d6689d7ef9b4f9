"""Dataset metadata from a file beside a config: class names for models without a dataset.

A converted checkpoint (tools/convert-hf-to-d2.py) knows its class names but no dataset of this
project. Its config names a metadata-only dataset in DATASETS.TEST, and `metadata.json` beside
the config holds that dataset's metadata ({"name", "stuff_classes", optional "stuff_colors"});
`register_metadata_beside(config_file)` puts it into detectron2's MetadataCatalog, where the
demo (and anything else reading MetadataCatalog.get(DATASETS.TEST[0])) finds it.
"""
import json
from pathlib import Path
from typing import Optional

from detectron2.data import MetadataCatalog

from ..errors import UserError

METADATA_FILE = "metadata.json"


class MetadataFileError(UserError, ValueError):
    """A metadata.json that cannot be used; the message names the file."""


def write_metadata(folder: Path, name: str, stuff_classes) -> Path:
    """Writes `folder/metadata.json` for the metadata-only dataset `name`."""
    path = Path(folder) / METADATA_FILE
    path.write_text(json.dumps({"name": name, "stuff_classes": list(stuff_classes)}, indent=1))
    return path


def register_metadata_beside(config_file) -> Optional[str]:
    """Registers the metadata of `metadata.json` beside `config_file`, if there is one; returns
    its dataset name. A name already registered keeps its metadata where it has class names."""
    path = Path(config_file).parent / METADATA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        name, classes = data["name"], [str(c) for c in data["stuff_classes"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MetadataFileError(f"{path}: not a metadata file of this project ({error!r}); it "
                                "needs {\"name\": ..., \"stuff_classes\": [...]}") from None
    metadata = MetadataCatalog.get(name)
    if not metadata.get("stuff_classes", None):
        metadata.set(stuff_classes=classes)
        if data.get("stuff_colors"):
            metadata.set(stuff_colors=[tuple(c) for c in data["stuff_colors"]])
    return name
