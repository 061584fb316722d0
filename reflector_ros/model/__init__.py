"""The Reflector network in torch: backbones, metric bins head, losses, checkpoints, ONNX export.

Import the submodules (reflector, losses, export); this package imports nothing so that
`reflector node` never pays for torch.
"""
