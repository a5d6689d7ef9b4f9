"""Installs the mask_former package: `pip install -e .`"""
from setuptools import find_packages, setup

setup(
    name="mask_former",
    version="0.1.0",
    description="MaskFormer (per-pixel classification is not all you need) as a Detectron2 project",
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(include=["mask_former", "mask_former.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "detectron2",  # see README: upstream from source, or the repacked PyPI build tools/setup_env.sh makes
        "fvcore",
        "iopath",
        "scipy",
        "numpy",  # 1 or 2: the label maps are read by mask_former.data.io, not detectron2's reader
        "opencv-python-headless",
        "pycocotools",
        "tqdm",
    ],
    extras_require={
        # tools/export_model.py (onnxscript: its --dynamo exporter) and demo/demo.py --onnx
        "export": ["onnx", "onnxscript", "onnxruntime"],
    },
)
