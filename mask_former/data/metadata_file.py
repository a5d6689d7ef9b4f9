"""Dataset metadata from files: class names (and colours) for datasets and for models without one.

- `metadata.json` beside a config: a converted checkpoint (tools/convert-hf-to-d2.py) knows its
  class names but no dataset of this project. Its config names a metadata-only dataset in
  DATASETS.TEST, and `metadata.json` holds that dataset's metadata ({"name", "stuff_classes",
  optional "stuff_colors"}); `register_metadata_beside(config_file)` puts it into detectron2's
  MetadataCatalog, where the demo (and anything else reading MetadataCatalog.get(DATASETS.TEST[0]))
  finds it.
- `classes.txt` and `colors.txt` of a dataset folder (docs/custom_datasets.md): one class name,
  or one "R G B" colour, per line, line i for label value i; `read_class_names` and `read_colors`
  read and check them.
"""
import json
import re
from pathlib import Path
from typing import List, Optional, Tuple

from detectron2.data import MetadataCatalog

from ..errors import UserError

METADATA_FILE = "metadata.json"


class MetadataFileError(UserError, ValueError):
    """A metadata file (metadata.json, classes.txt, colors.txt) that cannot be used; the message
    names the file."""


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


def _lines(path: Path, what: str) -> List[str]:
    """The lines of a text file, stripped, without the blank lines at its end."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise MetadataFileError(f"{path} not found: {what}") from None
    except UnicodeDecodeError:
        raise MetadataFileError(f"{path} is not UTF-8 text: {what}") from None
    except OSError as error:
        raise MetadataFileError(f"cannot read {path}: {error.strerror}") from None
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_class_names(path) -> List[str]:
    """The class names of a classes.txt: one per line, line i (from 0) naming label value i.

    Refuses (MetadataFileError, naming the file and line) a missing or empty file, an empty line
    before the last name (it would shift every later class) and a name on two lines.
    """
    path = Path(path)
    what = "it lists the class names, one a line; line i (from 0) names label value i"
    names = _lines(path, what)
    if not names:
        raise MetadataFileError(f"{path} is empty: {what}")
    first_line = {}
    for index, name in enumerate(names):
        if not name:
            raise MetadataFileError(f"{path} line {index + 1} is empty: every line names the class "
                                    f"of its label value (line {index + 1} is value {index})")
        if name in first_line:
            raise MetadataFileError(f"{path} names class {name!r} twice, on lines "
                                    f"{first_line[name] + 1} and {index + 1}")
        first_line[name] = index
    return names


def read_colors(path, num_classes: int, classes_file) -> List[Tuple[int, int, int]]:
    """The colours of a colors.txt: one "R G B" line (0-255 each) per class of `classes_file`,
    which lists `num_classes` classes; refuses (MetadataFileError, naming the file and line) other
    counts of lines or values."""
    path = Path(path)
    lines = _lines(path, 'it holds one "R G B" colour a line, one line per class')
    if len(lines) != num_classes:
        raise MetadataFileError(f"{path} has {len(lines)} lines but {classes_file} lists "
                                f"{num_classes} classes: give one \"R G B\" line per class")
    colors = []
    for index, line in enumerate(lines):
        values = line.replace(",", " ").split()
        if len(values) != 3 or not all(re.fullmatch("[0-9]{1,3}", v) and int(v) <= 255
                                        for v in values):
            raise MetadataFileError(f"{path} line {index + 1} is {line!r}, not \"R G B\" with "
                                    "three whole numbers from 0 to 255")
        colors.append(tuple(int(v) for v in values))
    return colors
