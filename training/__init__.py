"""Workstation-side training code: backbone port, feature extraction, one-class head training."""
