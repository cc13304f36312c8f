"""Classifiers the project ships or trains (torch needed: ``pip install 'rpdetect[eval]'``).

Each factory returns a ``torch.nn.Module`` mapping NORMALISED input to logits, and each module
documents the normalisation (mean/std) to fold into the exported graph.
"""
