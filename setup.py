"""Declares the native calibration extension; everything else lives in setup.cfg."""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

native = Pybind11Extension(
    "onnxc._native",
    sources=["compiler/native/histogram.cpp"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fno-math-errno"],
)

setup(ext_modules=[native], cmdclass={"build_ext": build_ext})
