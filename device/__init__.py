"""The light core that runs on the Pi. Never imports TensorFlow."""

__version__ = "0.1.0"
