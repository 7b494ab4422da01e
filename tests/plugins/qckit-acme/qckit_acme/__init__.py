"""Example third-party plugin for qckit."""
