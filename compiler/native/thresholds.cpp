// Threshold searches over |x| histograms (see calibration.hpp for what each returns).
#include "calibration.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace onnxc {
namespace {

int64_t occupied(const int64_t* counts, int64_t bins) {
    int64_t b = bins;
    while (b > 0 && counts[b - 1] == 0) --b;
    if (b == 0) throw std::invalid_argument("the histogram is empty");
    return b;
}

constexpr size_t kLanes = 8;

// Objectives within this relative distance of the best count as ties, and ties go to the first
// (smallest) candidate: equal objectives computed along different routes (here and in the numpy
// reference) then pick the same candidate instead of whichever rounding favoured.
constexpr double kTieTolerance = 1e-9;

int64_t first_near_best(const std::vector<double>& objective, int64_t first_candidate) {
    double best = std::numeric_limits<double>::infinity();
    for (double v : objective) best = std::min(best, v);
    const double bound = best + kTieTolerance * std::fabs(best) + 1e-300;
    for (size_t k = 0; k < objective.size(); ++k) {
        if (objective[k] <= bound) return first_candidate + int64_t(k);
    }
    throw std::logic_error("no finite objective");
}

// Sum over bins of count * (center - min(rint(center * inv), qmax) * step)^2. Rounding is
// half-to-even through the 2^52 trick (exact for 0 <= r < 2^51), which vectorizes everywhere.
inline __attribute__((always_inline)) double quantization_error_body(const double* centers, const double* weights,
                                                                     size_t n, double inv, double step, double qmax) {
    constexpr double kRound = 4503599627370496.0;  // 2^52
    double acc[kLanes] = {0.0};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (size_t j = 0; j < kLanes; ++j) {
            const double c = centers[i + j];
            double q = (c * inv + kRound) - kRound;
            q = q < qmax ? q : qmax;
            const double d = c - q * step;
            acc[j] += weights[i + j] * (d * d);
        }
    }
    double total = 0.0;
    for (size_t j = 0; j < kLanes; ++j) total += acc[j];
    for (; i < n; ++i) {
        const double c = centers[i];
        double q = (c * inv + kRound) - kRound;
        q = q < qmax ? q : qmax;
        const double d = c - q * step;
        total += weights[i] * (d * d);
    }
    return total;
}

__attribute__((target("avx2"))) double quantization_error_avx2(const double* centers, const double* weights, size_t n,
                                                               double inv, double step, double qmax) {
    return quantization_error_body(centers, weights, n, inv, step, qmax);
}

double quantization_error(const double* centers, const double* weights, size_t n, double inv, double step,
                          double qmax) {
    return use_avx2() ? quantization_error_avx2(centers, weights, n, inv, step, qmax)
                      : quantization_error_body(centers, weights, n, inv, step, qmax);
}

}  // namespace

PercentileBins percentile_bins(const int64_t* counts, int64_t bins, double p) {
    if (!(p > 0.0 && p <= 100.0)) throw std::invalid_argument("percentile must be in (0, 100]");
    int64_t total = 0;
    for (int64_t k = 0; k < bins; ++k) total += counts[k];
    if (total == 0) throw std::invalid_argument("the histogram is empty");
    const double target = p / 100.0 * double(total);
    PercentileBins out{0, bins - 1};
    int64_t cum = 0;
    for (int64_t k = 0; k < bins; ++k) {
        cum += counts[k];
        if (double(cum) >= target) {
            out.hi_bin = k;
            break;
        }
    }
    cum = 0;
    for (int64_t k = bins - 1; k >= 0; --k) {
        cum += counts[k];
        if (double(cum) >= target) {
            out.lo_bin = k;
            break;
        }
    }
    return out;
}

// With P the first i bins (the tail folded into bin i-1) and Q its quantization into `levels`
// buckets of m = i / levels bins (the last bucket takes the rest) spread evenly over P's nonzero
// bins, N = sum(P) and S = sum(Q):
//   KL(P/N || Q/S) = (sum P log P - sum P log Q) / N + log(S / N).
// sum P log P is a prefix sum plus one term. sum P log Q is a sum over buckets of
// (bucket mass) * log(bucket sum / bucket nonzeros); for all i with the same m, every bucket
// except the last is the same, so it is computed once per m. The search over all candidates is
// O(bins + levels * bins / levels) = O(bins).
int64_t entropy_candidate(const int64_t* counts, int64_t bins, int64_t levels) {
    if (levels < 2) throw std::invalid_argument("levels must be >= 2");
    const int64_t b = occupied(counts, bins);
    if (b <= levels) return b;
    std::vector<double> sum(b + 1, 0.0), plogp(b + 1, 0.0);
    std::vector<int64_t> nonzero(b + 1, 0);
    for (int64_t k = 0; k < b; ++k) {
        const double h = double(counts[k]);
        sum[k + 1] = sum[k] + h;
        plogp[k + 1] = plogp[k] + (h > 0.0 ? h * std::log(h) : 0.0);
        nonzero[k + 1] = nonzero[k] + (counts[k] > 0);
    }
    const double n = sum[b];
    std::vector<double> kl(size_t(b - levels + 1), std::numeric_limits<double>::infinity());
    for (int64_t m = 1; m * levels <= b; ++m) {
        double head = 0.0;  // sum P log Q over the first levels - 1 buckets
        for (int64_t j = 0; j + 1 < levels; ++j) {
            const double q = sum[(j + 1) * m] - sum[j * m];
            if (q > 0.0) head += q * std::log(q / double(nonzero[(j + 1) * m] - nonzero[j * m]));
        }
        const int64_t s = (levels - 1) * m;
        const int64_t last_i = std::min(b, m * levels + levels - 1);
        for (int64_t i = m * levels; i <= last_i; ++i) {
            const double q = sum[i] - sum[s];
            if (q <= 0.0) continue;  // the clipped tail lands where Q is zero: infinite divergence
            const double tail = n - sum[i];
            const double p_last = double(counts[i - 1]) + tail;
            const double mass = q + tail;
            const double nz = double(nonzero[i - 1] - nonzero[s]) + (p_last > 0.0 ? 1.0 : 0.0);
            const double sum_plogp = plogp[i - 1] + (p_last > 0.0 ? p_last * std::log(p_last) : 0.0);
            const double sum_plogq = head + mass * std::log(q / nz);
            kl[size_t(i - levels)] = (sum_plogp - sum_plogq) / n + std::log(sum[i] / n);
        }
    }
    return first_near_best(kl, levels);
}

int64_t mse_candidate(const int64_t* counts, int64_t bins, double width, double amax, int64_t qmax) {
    if (qmax < 1) throw std::invalid_argument("qmax must be >= 1");
    if (!(width > 0.0) || !(amax >= 0.0)) throw std::invalid_argument("need width > 0 and amax >= 0");
    const int64_t b = occupied(counts, bins);
    if (amax == 0.0) return b;
    std::vector<double> centers, weights;
    for (int64_t k = 0; k < b; ++k) {
        if (counts[k] == 0) continue;
        centers.push_back((double(k) + 0.5) * width);
        weights.push_back(double(counts[k]));
    }
    std::vector<double> err(static_cast<size_t>(b));
    for (int64_t i = 1; i <= b; ++i) {
        const double t = std::min(double(i) * width, amax);
        err[size_t(i - 1)] = quantization_error(centers.data(), weights.data(), centers.size(), double(qmax) / t,
                                                t / double(qmax), double(qmax));
    }
    return first_near_best(err, 1);
}

}  // namespace onnxc
