"""Ported ImageNet backbones: architecture in Keras 3, weights read without PyTorch."""
