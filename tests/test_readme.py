"""The README's code runs as pasted."""
import subprocess
import sys

from conftest import REPO_ROOT
from helpers import doc_block

README = REPO_ROOT / "README.md"


def test_extending_snippet_builds_and_runs_a_model_with_its_pixel_decoder():
    """The pixel decoder of "Extending it", in a Mask2Former model built from a config of the
    checkout, run from the checkout's root in a fresh interpreter, as a user would paste it."""
    code = doc_block(README, "snippet: extending", "python")
    completed = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True,
                               cwd=REPO_ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "torch.Size([11, 96, 128])"
