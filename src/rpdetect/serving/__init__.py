"""Serving at scale: a Triton Inference Server model repository for a detector file
(``triton.py``, needs nothing beyond rpdetect) and a KServe ``ModelServer`` speaking the Open
Inference Protocol over REST and gRPC (``server.py``, needs the ``serve`` extra: kserve)."""

from .triton import write_repository

__all__ = ["write_repository"]
