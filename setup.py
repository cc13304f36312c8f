"""Only the optional C extension lives here; everything else is in pyproject.toml.

``rpdetect.engine._normal`` draws the engine's N(0, 1) noise (see src/rpdetect/engine/noise.py).
It is optional: where it does not compile, rpdetect installs without it and draws with OpenCV.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "rpdetect.engine._normal", ["src/rpdetect/engine/_normal.c"],
    # rpdetect.testing.NORMAL_CFLAGS repeats these for the per-ISA test builds
    extra_compile_args=["-O3", "-fno-math-errno", "-std=c99"], optional=True)])
