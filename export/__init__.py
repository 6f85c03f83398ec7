"""Workstation side: int8 TFLite conversion, parity proof, evaluation with the device's runner."""
