"""Declares the native calibration extension; everything else lives in setup.cfg.

Flags stay portable (no -march=native): each kernel is compiled twice, for the baseline ISA and
under target("avx2"), and the module picks the AVX2 variant at load time where the CPU has it, so
one build runs everywhere. -ffp-contract=off keeps float
arithmetic bit-identical to the numpy reference (no fused multiply-adds); -fno-trapping-math
only drops floating-point exception flags, which lets gcc vectorize float-to-int conversions.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

native = Pybind11Extension(
    "onnxc._native",
    sources=[
        "compiler/native/histogram.cpp",
        "compiler/native/thresholds.cpp",
        "compiler/native/module.cpp",
    ],
    depends=["compiler/native/calibration.hpp"],
    include_dirs=["compiler/native"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-pthread"],
    extra_link_args=["-pthread"],
)

setup(ext_modules=[native], cmdclass={"build_ext": build_ext})
