"""ament_python package that also installs with plain pip.

colcon uses setup.cfg to put console scripts in lib/reflector_ros. pip ignores
that, so the ROS layout (ament index marker, launch, config, lib/<pkg>/depth_node)
is also shipped through data_files: `ros2 launch reflector_ros depth.launch.py`
then resolves from a venv prefix too.
"""
from glob import glob

from setuptools import find_packages, setup

PKG = "reflector_ros"

setup(
    name=PKG,
    version="0.1.0",
    packages=find_packages(include=[PKG, f"{PKG}.*"]),
    package_data={PKG: ["weights/*.onnx", "weights/*.pt", "weights/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PKG}"]),
        (f"share/{PKG}", ["package.xml"]),
        (f"share/{PKG}/launch", glob("launch/*.py")),
        (f"share/{PKG}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
        (f"lib/{PKG}", ["scripts/depth_node"]),
    ],
    install_requires=["numpy", "opencv-python-headless", "pyyaml", "onnxruntime"],
    zip_safe=False,
    maintainer="reflector_ros developers",
    maintainer_email="dev@reflector-ros.invalid",
    description="Metric monocular depth node for ROS 2 (Reflector network).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "depth_node = reflector_ros.ros.main:main",
            "reflector = reflector_ros.cli:main",
        ],
    },
)
