// Python bindings (module onnxc._native). Heavy calls release the GIL. Arrays must already have
// the exact dtype and layout (float32 / int64, C-contiguous): onnxc.calibration converts, so no
// copy ever happens here behind the caller's back.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>

#include "calibration.hpp"

namespace py = pybind11;
using onnxc::Accumulator;
using onnxc::HistogramState;

namespace {

using Floats = py::array_t<float, py::array::c_style>;
using Counts = py::array_t<int64_t, py::array::c_style>;

py::dict state_to_dict(const HistogramState& s) {
    py::dict d;
    d["bins"] = s.bins;
    d["symmetric"] = s.symmetric;
    d["fixed"] = s.fixed;
    d["lo"] = s.lo;
    d["hi"] = s.hi;
    d["exponent"] = s.exponent;
    d["offset"] = s.offset;
    d["count"] = s.count;
    d["nan"] = s.nan;
    d["posinf"] = s.posinf;
    d["neginf"] = s.neginf;
    d["below"] = s.below;
    d["above"] = s.above;
    d["min"] = double(s.min);
    d["max"] = double(s.max);
    Counts counts(py::ssize_t(s.counts.size()));
    std::memcpy(counts.mutable_data(), s.counts.data(), s.counts.size() * sizeof(int64_t));
    d["counts"] = counts;
    return d;
}

HistogramState state_from_dict(const py::dict& d) {
    HistogramState s;
    s.bins = d["bins"].cast<int64_t>();
    s.symmetric = d["symmetric"].cast<bool>();
    s.fixed = d["fixed"].cast<bool>();
    s.lo = d["lo"].cast<double>();
    s.hi = d["hi"].cast<double>();
    s.exponent = d["exponent"].cast<int>();
    s.offset = d["offset"].cast<int64_t>();
    s.count = d["count"].cast<int64_t>();
    s.nan = d["nan"].cast<int64_t>();
    s.posinf = d["posinf"].cast<int64_t>();
    s.neginf = d["neginf"].cast<int64_t>();
    s.below = d["below"].cast<int64_t>();
    s.above = d["above"].cast<int64_t>();
    const double mn = d["min"].cast<double>(), mx = d["max"].cast<double>();
    s.min = float(mn);
    s.max = float(mx);
    if (double(s.min) != mn || double(s.max) != mx) throw std::invalid_argument("min/max must be float32 values");
    const Counts counts = d["counts"].cast<Counts>();
    if (counts.ndim() != 1) throw std::invalid_argument("counts must be one-dimensional");
    s.counts.assign(counts.data(), counts.data() + counts.size());
    s.validate();
    return s;
}

void check_counts(const Counts& counts) {
    if (counts.ndim() != 1) throw std::invalid_argument("counts must be one-dimensional");
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "onnxc native calibration kernels: streaming histograms and threshold searches";
    m.attr("MIN_EXPONENT") = onnxc::kMinExponent;
    m.attr("MAX_EXPONENT") = onnxc::kMaxExponent;
    m.attr("SIGNED_INDEX_BITS") = onnxc::kSignedIndexBits;
    m.attr("MAX_BINS") = onnxc::kMaxBins;

    py::class_<Accumulator>(m, "Accumulator")
        .def(py::init([](int64_t bins, bool symmetric, std::optional<double> lo, std::optional<double> hi) {
                 if (lo.has_value() != hi.has_value()) throw std::invalid_argument("give both lo and hi, or neither");
                 const bool fixed = lo.has_value();
                 return new Accumulator(HistogramState(bins, symmetric, fixed, fixed ? *lo : 0.0, fixed ? *hi : 0.0));
             }),
             py::arg("bins"), py::arg("symmetric"), py::arg("lo") = py::none(), py::arg("hi") = py::none())
        .def(
            "update",
            [](Accumulator& self, const Floats& x, int threads) {
                const float* data = x.data();
                const size_t n = size_t(x.size());
                py::gil_scoped_release release;
                self.update(data, n, threads);
            },
            py::arg("x").noconvert(), py::arg("threads") = 0)
        .def(
            "merge",
            [](Accumulator& self, const Accumulator& other) {
                py::gil_scoped_release release;
                self.merge(other);
            },
            py::arg("other"))
        .def("state", [](const Accumulator& self) { return state_to_dict(self.snapshot()); })
        .def_static("from_state", [](const py::dict& d) { return new Accumulator(state_from_dict(d)); });

    m.def("set_max_threads", &onnxc::set_max_threads, py::arg("n"),
          "Upper bound on threads per update (0: the machine's hardware concurrency).");
    m.def("max_threads", &onnxc::max_threads);
    m.def("isa", &onnxc::isa_name, "Which kernel variant runs: 'avx2' or 'baseline'.");

    m.def(
        "percentile_bins",
        [](const Counts& counts, double p) {
            check_counts(counts);
            const int64_t* data = counts.data();
            const int64_t n = counts.size();
            py::gil_scoped_release release;
            const auto r = onnxc::percentile_bins(data, n, p);
            return std::make_pair(r.lo_bin, r.hi_bin);
        },
        py::arg("counts").noconvert(), py::arg("p"));
    m.def(
        "entropy_candidate",
        [](const Counts& counts, int64_t levels) {
            check_counts(counts);
            const int64_t* data = counts.data();
            const int64_t n = counts.size();
            py::gil_scoped_release release;
            return onnxc::entropy_candidate(data, n, levels);
        },
        py::arg("counts").noconvert(), py::arg("levels"));
    m.def(
        "mse_candidate",
        [](const Counts& counts, double width, double amax, int64_t qmax) {
            check_counts(counts);
            const int64_t* data = counts.data();
            const int64_t n = counts.size();
            py::gil_scoped_release release;
            return onnxc::mse_candidate(data, n, width, amax, qmax);
        },
        py::arg("counts").noconvert(), py::arg("width"), py::arg("amax"), py::arg("qmax"));
}
