"""reflector_ros: metric depth from one camera with the Reflector network."""
__version__ = "0.1.0"
