// Calibration statistics: streaming histogram accumulators and threshold searches.
//
// The histogram's range rule makes every result a function of the data multiset alone, never of
// batch order, batch size, block size or thread count:
//
// * power-of-two mode (default): bin k holds the values x with floor(x * 2^-e) == offset + k.
//   The bin width 2^e is the smallest that puts the data's [min, max] (or [0, amax] for |x|)
//   inside `bins` bins. Because x * 2^-e is exact in float32, widening from 2^e to 2^(e+d) maps
//   bin k to floor(k / 2^d) exactly, so an accumulator that widened several times holds the same
//   counts as one that saw all data at the final width. Merging re-bins the same way.
// * fixed mode (the second phase of a two-phase protocol): the range is given up front; bin
//   index floor((x - lo) * scale) in float32, clamped to the edge bins, with out-of-range values
//   also counted apart.
//
// Integer counts make merges exact and associative, so threads and processes split the work
// freely. The pure-numpy reference in onnxc.calibration.reference restates all of this.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace onnxc {

// 2^-e must be a float32 (normal or subnormal) so binning stays exact.
constexpr int kMinExponent = -127;
constexpr int kMaxExponent = 128;
// Signed histograms keep |x * 2^-e| < 2^31 so bin numbers fit int32 in the vector kernel. A width
// of amax * 2^-30 is already finer than float32's own spacing, so nothing is lost.
constexpr int kSignedIndexBits = 30;
constexpr int64_t kMaxBins = int64_t(1) << 24;

struct HistogramState {
    int64_t bins = 0;
    bool symmetric = true;
    bool fixed = false;
    double lo = 0.0, hi = 0.0;   // fixed mode only
    int exponent = kMinExponent; // power-of-two mode only
    int64_t offset = 0;          // power-of-two mode only: absolute number of bin 0
    int64_t count = 0;           // finite values
    int64_t nan = 0, posinf = 0, neginf = 0;
    int64_t below = 0, above = 0; // fixed mode: finite values outside [lo, hi] (clamped into edge bins)
    float min = 0.0f, max = 0.0f; // of finite values; +inf / -inf while count == 0
    std::vector<int64_t> counts;

    HistogramState() = default;
    HistogramState(int64_t bins, bool symmetric, bool fixed, double lo, double hi);

    // Same configuration, no data: the starting point of a worker thread.
    HistogramState empty_like() const;
    // Adds a slice of float32 values on the calling thread.
    void add(const float* x, size_t n);
    // Adds another state's data; throws std::invalid_argument when configurations differ.
    void merge(const HistogramState& other);
    // Throws std::invalid_argument unless the fields describe a state this code could produce.
    void validate() const;
};

// Thread-safe owner of a HistogramState: updates and merges lock it, heavy work splits across
// std::threads over contiguous slices, each with its own state, merged at the end.
class Accumulator {
public:
    explicit Accumulator(HistogramState state);
    Accumulator(const Accumulator&) = delete;
    Accumulator& operator=(const Accumulator&) = delete;

    // threads <= 0: pick from the size and the global limit; threads > 0 is taken as given.
    void update(const float* x, size_t n, int threads);
    void merge(const Accumulator& other);
    HistogramState snapshot() const;

private:
    mutable std::mutex mutex_;
    HistogramState state_;
};

void set_max_threads(int n);
int max_threads();

// Kernels come in an AVX2 variant and a baseline (x86-64 SSE2 / any other CPU) variant with
// bit-identical results. The AVX2 one runs where the CPU has it, unless the environment sets
// ONNXC_NATIVE_ISA=baseline when the module loads (to test or compare the baseline path).
bool use_avx2();
const char* isa_name();

// Threshold searches work on |x| histograms given as counts; they return bin numbers / candidate
// lengths so that the value mapping (width, clipping to amax) lives in one place, in Python.
// Searches pick the first candidate whose objective is within a relative 1e-9 of the best.

// Percentile p in (0, 100]: `hi_bin` is the first bin whose cumulative count reaches p% of the
// total; `lo_bin` is the last bin from which the counts up to the end reach p% of the total.
struct PercentileBins {
    int64_t lo_bin;
    int64_t hi_bin;
};
PercentileBins percentile_bins(const int64_t* counts, int64_t bins, double p);

// KL-divergence calibration: the number of leading bins i (levels <= i <= last occupied bin + 1)
// whose clipped distribution P, quantized into `levels` buckets Q, has the smallest KL(P || Q).
int64_t entropy_candidate(const int64_t* counts, int64_t bins, int64_t levels);

// MSE calibration: the number of leading bins i whose threshold min(i * width, amax) gives the
// smallest expected squared error of symmetric linear quantization to [0, qmax] levels, each
// value taken at its bin's center.
int64_t mse_candidate(const int64_t* counts, int64_t bins, double width, double amax, int64_t qmax);

} // namespace onnxc
