"""The GPU worker: runs queued jobs through a diffusers pipeline.

Importing this package is cheap: torch and diffusers load only when an engine is built.
"""
