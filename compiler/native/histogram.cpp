// Streaming histogram accumulators (see calibration.hpp for the range rule).
//
// Data is processed in blocks that stay in L2: one vectorized scan finds the block's finite
// min/max and counts non-finite values, the range widens if needed, then a vectorized loop turns
// values into bin numbers and a scalar loop increments four interleaved uint32 sub-histograms
// (independent increments keep the store-to-load chains short).
//
// The |x| power-of-two histogram (the one calibration uses) has an AVX2 path that does the scan
// and the binning in one pass at the current width, redoing the block only when it widens the
// range, and leaves bin 0 out of the scalar loop: activations after ReLU are 40-50% zeros, and
// counting them with a vector compare halves the scattered increments.
#include "calibration.hpp"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

namespace onnxc {
namespace {

constexpr size_t kBlock = 16384;
constexpr size_t kLanes = 16;
// Below this many values per thread, starting a thread costs more than it saves.
constexpr size_t kMinPerThread = size_t(1) << 20;

std::atomic<int> g_max_threads{0};

#define ONNXC_INLINE inline __attribute__((always_inline))
#define ONNXC_AVX2 __attribute__((target("avx2")))

// Finite min/max of x[0..n) and the number of NaN/inf values. Lane arrays let gcc vectorize the
// reductions without reassociation flags.
ONNXC_INLINE size_t scan_block_body(const float* x, size_t n, float* out_min, float* out_max) {
    float lmin[kLanes], lmax[kLanes];
    int32_t lbad[kLanes];
    for (size_t j = 0; j < kLanes; ++j) {
        lmin[j] = INFINITY;
        lmax[j] = -INFINITY;
        lbad[j] = 0;
    }
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (size_t j = 0; j < kLanes; ++j) {
            const float v = x[i + j];
            const bool finite = std::fabs(v) <= FLT_MAX;
            const float vmin = finite ? v : INFINITY;
            const float vmax = finite ? v : -INFINITY;
            lmin[j] = vmin < lmin[j] ? vmin : lmin[j];
            lmax[j] = vmax > lmax[j] ? vmax : lmax[j];
            lbad[j] += finite ? 0 : 1;
        }
    }
    float mn = INFINITY, mx = -INFINITY;
    size_t bad = 0;
    for (size_t j = 0; j < kLanes; ++j) {
        mn = std::min(mn, lmin[j]);
        mx = std::max(mx, lmax[j]);
        bad += size_t(lbad[j]);
    }
    for (; i < n; ++i) {
        const float v = x[i];
        if (std::fabs(v) <= FLT_MAX) {
            mn = std::min(mn, v);
            mx = std::max(mx, v);
        } else {
            ++bad;
        }
    }
    *out_min = mn;
    *out_max = mx;
    return bad;
}

ONNXC_AVX2 size_t scan_block_avx2(const float* x, size_t n, float* out_min, float* out_max) {
    return scan_block_body(x, n, out_min, out_max);
}

size_t scan_block(const float* x, size_t n, float* out_min, float* out_max) {
    return use_avx2() ? scan_block_avx2(x, n, out_min, out_max) : scan_block_body(x, n, out_min, out_max);
}

// Power-of-two |x| histogram: bin = floor(|x| * scale); the range rule guarantees bin < bins.
// Non-finite values go to the spare bin `spare`.
ONNXC_INLINE void index_pow2_abs_body(const float* x, int32_t* idx, size_t n, float scale, int32_t spare) {
    for (size_t i = 0; i < n; ++i) {
        const float a = std::fabs(x[i]);
        const bool finite = a <= FLT_MAX;
        const int32_t k = int32_t((finite ? a : 0.0f) * scale);
        idx[i] = finite ? k : spare;
    }
}

ONNXC_AVX2 void index_pow2_abs_avx2(const float* x, int32_t* idx, size_t n, float scale, int32_t spare) {
    index_pow2_abs_body(x, idx, n, scale, spare);
}

void index_pow2_abs(const float* x, int32_t* idx, size_t n, float scale, int32_t spare) {
    if (use_avx2()) {
        index_pow2_abs_avx2(x, idx, n, scale, spare);
    } else {
        index_pow2_abs_body(x, idx, n, scale, spare);
    }
}

// Power-of-two signed histogram: bin = floor(x * scale) - offset, with |x * scale| < 2^31.
// gcc vectorizes floor() only where SSE4.1 has roundps, and the baseline truncate-and-correct
// form only without it, so each ISA gets its own loop; both compute the same floor exactly.
ONNXC_AVX2 void index_pow2_signed_avx2(const float* x, int32_t* idx, size_t n, float scale, int32_t offset, int32_t spare) {
    for (size_t i = 0; i < n; ++i) {
        const float v = x[i];
        const bool finite = std::fabs(v) <= FLT_MAX;
        const int32_t k = int32_t(std::floor((finite ? v : 0.0f) * scale)) - offset;
        idx[i] = finite ? k : spare;
    }
}

void index_pow2_signed_baseline(const float* x, int32_t* idx, size_t n, float scale, int32_t offset,
                                int32_t spare) {
    for (size_t i = 0; i < n; ++i) {
        const float v = x[i];
        const bool finite = std::fabs(v) <= FLT_MAX;
        const float t = (finite ? v : 0.0f) * scale;
        const int32_t truncated = int32_t(t);
        const int32_t step_down = -int32_t(float(truncated) > t);  // negative non-integers
        idx[i] = finite ? truncated + step_down - offset : spare;
    }
}

void index_pow2_signed(const float* x, int32_t* idx, size_t n, float scale, int32_t offset, int32_t spare) {
    if (use_avx2()) {
        index_pow2_signed_avx2(x, idx, n, scale, offset, spare);
    } else {
        index_pow2_signed_baseline(x, idx, n, scale, offset, spare);
    }
}

// Fixed range: bin = floor(clamp((v - lo) * scale, 0, top)) with v = |x| or x.
ONNXC_INLINE void index_fixed_body(const float* x, int32_t* idx, size_t n, bool absolute, float lo, float scale,
                                   float top, int32_t spare) {
    for (size_t i = 0; i < n; ++i) {
        const float v = absolute ? std::fabs(x[i]) : x[i];
        const bool finite = std::fabs(v) <= FLT_MAX;
        float t = ((finite ? v : lo) - lo) * scale;
        t = t < 0.0f ? 0.0f : t;
        t = t > top ? top : t;
        const int32_t k = int32_t(t);
        idx[i] = finite ? k : spare;
    }
}

ONNXC_AVX2 void index_fixed_avx2(const float* x, int32_t* idx, size_t n, bool absolute, float lo, float scale,
                                 float top, int32_t spare) {
    index_fixed_body(x, idx, n, absolute, lo, scale, top, spare);
}

void index_fixed(const float* x, int32_t* idx, size_t n, bool absolute, float lo, float scale, float top,
                 int32_t spare) {
    if (use_avx2()) {
        index_fixed_avx2(x, idx, n, absolute, lo, scale, top, spare);
    } else {
        index_fixed_body(x, idx, n, absolute, lo, scale, top, spare);
    }
}

// Left-packing permutations: entry m moves the lanes whose bit is set in m to the front.
struct PackTable {
    alignas(32) int32_t lanes[256][8];
    PackTable() {
        for (int m = 0; m < 256; ++m) {
            int k = 0;
            for (int j = 0; j < 8; ++j) {
                if (m & (1 << j)) lanes[m][k++] = j;
            }
            for (; k < 8; ++k) lanes[m][k] = 0;
        }
    }
};

const PackTable& pack_table() {
    static const PackTable table;
    return table;
}

// Bin numbers of the |x| power-of-two histogram with bin 0 left out, packed; returns how many.
ONNXC_AVX2 size_t index_pack_abs_avx2(const float* x, size_t n, float scale, int32_t spare, int32_t* packed) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 largest = _mm256_set1_ps(FLT_MAX);
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i vspare = _mm256_set1_epi32(spare);
    const __m256i zero = _mm256_setzero_si256();
    const PackTable& table = pack_table();
    size_t kept = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
        const __m256 finite = _mm256_cmp_ps(a, largest, _CMP_LE_OQ);
        __m256i k = _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_and_ps(a, finite), vscale));
        k = _mm256_blendv_epi8(vspare, k, _mm256_castps_si256(finite));
        const int nonzero = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, zero))) ^ 0xff;
        const __m256i order = _mm256_load_si256(reinterpret_cast<const __m256i*>(table.lanes[nonzero]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + kept), _mm256_permutevar8x32_epi32(k, order));
        kept += size_t(__builtin_popcount(unsigned(nonzero)));
    }
    for (; i < n; ++i) {
        const float a = std::fabs(x[i]);
        const int32_t k = a <= FLT_MAX ? int32_t(a * scale) : spare;
        if (k != 0) packed[kept++] = k;
    }
    return kept;
}

float pow2f(int e) { return std::ldexp(1.0f, e); }

// -0.0 and +0.0 compare equal, so which one a min/max keeps would depend on the data's order; the
// state always holds +0.0.
float plus_zero(float v) { return v + 0.0f; }

// floor(x * 2^-e) in exact float32 arithmetic, as an integer.
int64_t scaled_floor(float x, int e) { return int64_t(std::floor(x * pow2f(-e))); }

// The power-of-two placement (exponent, offset) for finite data in [mn, mx]: the smallest
// exponent >= start that fits. Fitting is monotone in the exponent, so starting at any exponent
// known to be <= the answer (a previous answer for a subset of the data, or a safe lower bound)
// gives the same result.
std::pair<int, int64_t> placement(int64_t bins, bool symmetric, float mn, float mx, int start) {
    const float amax = std::max(std::fabs(mn), std::fabs(mx));
    int e = start;
    if (amax > 0.0f) {
        const int top = std::ilogb(amax);
        if (symmetric) {
            // amax >= 2^top and bins < 2^(ilogb(bins)+1) put the answer above this bound.
            e = std::max(e, top - std::ilogb(double(bins)) - 2);
        } else {
            e = std::max(e, top - kSignedIndexBits);
            const double span = double(mx) - double(mn);
            if (span > 0.0) e = std::max(e, std::ilogb(span) - std::ilogb(double(bins)) - 3);
        }
    }
    e = std::max(e, kMinExponent);
    for (; e < kMaxExponent; ++e) {
        if (symmetric) {
            if (scaled_floor(amax, e) < bins) break;
        } else if (scaled_floor(mx, e) - scaled_floor(mn, e) < bins) {
            break;
        }
    }
    const int64_t offset = symmetric ? 0 : scaled_floor(mn, e);
    return {e, offset};
}

// Adds src (placed at src_e/src_off) into dst (placed at dst_e/dst_off, dst_e >= src_e).
void add_rebinned(std::vector<int64_t>& dst, int dst_e, int64_t dst_off, const std::vector<int64_t>& src,
                  int src_e, int64_t src_off) {
    const int shift = std::min(dst_e - src_e, 62);
    const int64_t n = int64_t(dst.size());
    for (int64_t k = 0; k < int64_t(src.size()); ++k) {
        if (src[k] == 0) continue;
        // Arithmetic right shift is floor division by 2^shift, also for negative bin numbers.
        const int64_t nk = ((src_off + k) >> shift) - dst_off;
        if (nk < 0 || nk >= n) throw std::logic_error("histogram re-binning left the range");
        dst[nk] += src[k];
    }
}

// Four interleaved uint32 sub-histograms, flushed into the int64 counts before they could wrap
// and before any re-binning.
class SubHistograms {
public:
    explicit SubHistograms(int64_t bins) : stride_(size_t(bins) + 1), h_(4 * stride_, 0) {}

    void add(const int32_t* idx, size_t n) {
        uint32_t* h0 = h_.data();
        uint32_t* h1 = h0 + stride_;
        uint32_t* h2 = h1 + stride_;
        uint32_t* h3 = h2 + stride_;
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            ++h0[idx[i]];
            ++h1[idx[i + 1]];
            ++h2[idx[i + 2]];
            ++h3[idx[i + 3]];
        }
        for (; i < n; ++i) ++h0[idx[i]];
        pending_ += n;
    }

    bool near_full(size_t next) const { return pending_ + next > std::numeric_limits<uint32_t>::max(); }

    void flush_into(std::vector<int64_t>& counts) {
        if (pending_ == 0) return;
        const size_t bins = stride_ - 1;  // the spare slot collects non-finite values: dropped
        for (size_t k = 0; k < bins; ++k) {
            counts[k] += int64_t(h_[k]) + h_[stride_ + k] + h_[2 * stride_ + k] + h_[3 * stride_ + k];
        }
        std::fill(h_.begin(), h_.end(), 0u);
        pending_ = 0;
    }

private:
    size_t stride_;
    std::vector<uint32_t> h_;
    size_t pending_ = 0;
};

void check_config(int64_t bins, bool symmetric, bool fixed, double lo, double hi) {
    // One bin cannot hold signed data that straddles a power-of-two boundary such as zero.
    if (bins < 2 || bins > kMaxBins) {
        throw std::invalid_argument("bins must be in [2, " + std::to_string(kMaxBins) + "], got " +
                                    std::to_string(bins));
    }
    if (fixed) {
        if (!std::isfinite(lo) || !std::isfinite(hi) || !(hi > lo)) {
            throw std::invalid_argument("a fixed range needs finite lo < hi");
        }
        if (symmetric && lo != 0.0) throw std::invalid_argument("a fixed |x| range must start at 0");
        if (!std::isfinite(float(hi)) || !std::isfinite(float(lo)) || !std::isfinite(float(bins / (hi - lo))) ||
            float(bins / (hi - lo)) <= 0.0f) {
            throw std::invalid_argument("the fixed range does not fit float32 arithmetic");
        }
    }
}

}  // namespace

HistogramState::HistogramState(int64_t bins_, bool symmetric_, bool fixed_, double lo_, double hi_)
    : bins(bins_), symmetric(symmetric_), fixed(fixed_), lo(fixed_ ? lo_ : 0.0), hi(fixed_ ? hi_ : 0.0),
      min(INFINITY), max(-INFINITY) {
    check_config(bins, symmetric, fixed, lo, hi);
    counts.assign(size_t(bins), 0);
}

HistogramState HistogramState::empty_like() const { return HistogramState(bins, symmetric, fixed, lo, hi); }

void HistogramState::add(const float* x, size_t n) {
    SubHistograms sub(bins);
    std::vector<int32_t> idx(std::min(n, kBlock) + 8);  // packed stores write whole vectors
    const int32_t spare = int32_t(bins);
    const float flo = float(lo), fhi = float(hi);
    const float fixed_scale = fixed ? float(bins / (hi - lo)) : 0.0f;
    const float top = float(bins - 1);
    // Bin 0 goes around the scalar loop where the data has zeros to spare (ReLU outputs); packing
    // costs about a tenth on data without them, so after a block with few the blocks go the plain
    // way, with every 16th packed to look again.
    const bool packing = !fixed && symmetric && use_avx2();
    size_t unpacked = 0;
    for (size_t start = 0; start < n; start += kBlock) {
        const float* block = x + start;
        const size_t m = std::min(kBlock, n - start);
        float bmin, bmax;
        const size_t bad = scan_block(block, m, &bmin, &bmax);
        if (bad) {
            for (size_t i = 0; i < m; ++i) {
                const float v = block[i];
                if (std::isnan(v)) ++nan;
                else if (v == INFINITY) ++posinf;
                else if (v == -INFINITY) ++neginf;
            }
        }
        if (bad == m) continue;
        const float new_min = plus_zero(std::min(min, bmin)), new_max = plus_zero(std::max(max, bmax));
        size_t binned = m;  // entries of idx to increment
        if (fixed) {
            if (symmetric) {
                if (std::max(std::fabs(bmin), std::fabs(bmax)) > fhi) {
                    for (size_t i = 0; i < m; ++i) above += (std::fabs(block[i]) > fhi && std::fabs(block[i]) <= FLT_MAX);
                }
                index_fixed(block, idx.data(), m, true, 0.0f, fixed_scale, top, spare);
            } else {
                if (bmin < flo) {
                    for (size_t i = 0; i < m; ++i) below += (block[i] < flo && block[i] >= -FLT_MAX);
                }
                if (bmax > fhi) {
                    for (size_t i = 0; i < m; ++i) above += (block[i] > fhi && block[i] <= FLT_MAX);
                }
                index_fixed(block, idx.data(), m, false, flo, fixed_scale, top, spare);
            }
        } else {
            const auto [e, off] = placement(bins, symmetric, new_min, new_max, count ? exponent : kMinExponent);
            if (count == 0) {
                exponent = e;
                offset = off;
            } else if (e != exponent || off != offset) {
                sub.flush_into(counts);
                std::vector<int64_t> moved(counts.size(), 0);
                add_rebinned(moved, e, off, counts, exponent, offset);
                counts.swap(moved);
                exponent = e;
                offset = off;
            }
            if (packing && unpacked % 16 == 0) {
                binned = index_pack_abs_avx2(block, m, pow2f(-exponent), spare, idx.data());
                counts[0] += int64_t(m - binned);
                unpacked = (m - binned) * 16 >= m ? 0 : 1;
            } else if (symmetric) {
                index_pow2_abs(block, idx.data(), m, pow2f(-exponent), spare);
                ++unpacked;
            } else {
                index_pow2_signed(block, idx.data(), m, pow2f(-exponent), int32_t(offset), spare);
            }
        }
        if (sub.near_full(binned)) sub.flush_into(counts);
        sub.add(idx.data(), binned);
        min = new_min;
        max = new_max;
        count += int64_t(m - bad);
    }
    sub.flush_into(counts);
}

void HistogramState::merge(const HistogramState& other) {
    if (other.bins != bins || other.symmetric != symmetric || other.fixed != fixed || other.lo != lo ||
        other.hi != hi) {
        throw std::invalid_argument("cannot merge histograms with different bins, symmetry or range");
    }
    nan += other.nan;
    posinf += other.posinf;
    neginf += other.neginf;
    below += other.below;
    above += other.above;
    if (other.count == 0) return;
    if (count == 0) {
        exponent = other.exponent;
        offset = other.offset;
        counts = other.counts;
    } else if (fixed) {
        for (size_t k = 0; k < counts.size(); ++k) counts[k] += other.counts[k];
    } else {
        const float new_min = plus_zero(std::min(min, other.min)), new_max = plus_zero(std::max(max, other.max));
        const auto [e, off] = placement(bins, symmetric, new_min, new_max, std::max(exponent, other.exponent));
        std::vector<int64_t> merged(counts.size(), 0);
        add_rebinned(merged, e, off, counts, exponent, offset);
        add_rebinned(merged, e, off, other.counts, other.exponent, other.offset);
        counts.swap(merged);
        exponent = e;
        offset = off;
    }
    min = plus_zero(std::min(min, other.min));
    max = plus_zero(std::max(max, other.max));
    count += other.count;
}

void HistogramState::validate() const {
    check_config(bins, symmetric, fixed, lo, hi);
    if (int64_t(counts.size()) != bins) throw std::invalid_argument("counts length differs from bins");
    int64_t total = 0;
    for (int64_t c : counts) {
        if (c < 0) throw std::invalid_argument("negative histogram count");
        total += c;
    }
    if (total != count) throw std::invalid_argument("histogram counts do not add up to the finite count");
    if (count < 0 || nan < 0 || posinf < 0 || neginf < 0 || below < 0 || above < 0) {
        throw std::invalid_argument("negative tally");
    }
    if (!fixed && (below || above)) throw std::invalid_argument("clipping tallies on a power-of-two histogram");
    if (fixed && (exponent != kMinExponent || offset != 0)) {
        throw std::invalid_argument("a fixed-range histogram has no power-of-two placement");
    }
    if (count == 0) {
        if (!(min == INFINITY && max == -INFINITY) || exponent != kMinExponent || offset != 0) {
            throw std::invalid_argument("an empty histogram must have the canonical empty placement");
        }
        return;
    }
    if (!(std::fabs(min) <= FLT_MAX && std::fabs(max) <= FLT_MAX && min <= max)) {
        throw std::invalid_argument("min/max of a non-empty histogram must be finite and ordered");
    }
    if (!fixed && placement(bins, symmetric, min, max, kMinExponent) != std::make_pair(exponent, offset)) {
        throw std::invalid_argument("power-of-two placement does not match min/max");
    }
}

Accumulator::Accumulator(HistogramState state) : state_(std::move(state)) {}

bool use_avx2() {
    static const bool avx2 = [] {
        const char* forced = std::getenv("ONNXC_NATIVE_ISA");
        if (forced && std::string(forced) == "baseline") return false;
        return bool(__builtin_cpu_supports("avx2"));
    }();
    return avx2;
}

const char* isa_name() { return use_avx2() ? "avx2" : "baseline"; }

void set_max_threads(int n) { g_max_threads.store(std::max(n, 0)); }

int max_threads() {
    const int n = g_max_threads.load();
    if (n > 0) return n;
    return int(std::max(1u, std::thread::hardware_concurrency()));
}

void Accumulator::update(const float* x, size_t n, int threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t t = threads > 0 ? size_t(threads) : std::min(size_t(max_threads()), n / kMinPerThread);
    t = std::max<size_t>(1, std::min(t, (n + kBlock - 1) / kBlock));
    if (t == 1) {
        state_.add(x, n);
        return;
    }
    // Block-aligned slices; the split changes nothing in the result, only who computes it.
    const size_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<HistogramState> parts(t, state_.empty_like());
    std::vector<std::exception_ptr> errors(t);
    std::vector<std::thread> workers;
    workers.reserve(t);
    for (size_t w = 0; w < t; ++w) {
        const size_t b0 = blocks * w / t, b1 = blocks * (w + 1) / t;
        const size_t lo = b0 * kBlock, hi = std::min(n, b1 * kBlock);
        workers.emplace_back([&, w, lo, hi] {
            try {
                parts[w].add(x + lo, hi - lo);
            } catch (...) {
                errors[w] = std::current_exception();
            }
        });
    }
    for (auto& worker : workers) worker.join();
    for (auto& error : errors) {
        if (error) std::rethrow_exception(error);
    }
    for (auto& part : parts) state_.merge(part);
}

void Accumulator::merge(const Accumulator& other) {
    const HistogramState theirs = other.snapshot();  // copy first: `other` may be `this`
    std::lock_guard<std::mutex> lock(mutex_);
    state_.merge(theirs);
}

HistogramState Accumulator::snapshot() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return state_;
}

}  // namespace onnxc
