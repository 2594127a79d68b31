import Glibc

/// Netem delay-distribution tables generated in-process from the distributions' mathematics.
///
/// The kernel draws a jittered delay as `latency + jitter * table[random] / 8192` (NETEM_DIST_SCALE), so a table is an
/// inverse CDF of a distribution with mean 0 and standard deviation 1, sampled at 4096 evenly spaced probabilities and
/// scaled by 8192 into s16 (values beyond ±4 standard deviations clamp to the s16 range). Entry `i` is the quantile
/// at probability `(i + 0.5) / 4096` (the midpoint of its slice), which keeps the table's mean at 0.
///
/// These are not iproute2's `*.dist` files: those are made by different programs (its pareto table, for one, is
/// scaled by 1/variance rather than 1/σ). `NetemDistributionTests` compares their shapes.
public enum NetemDistribution {
    public static let size = 4096
    public static let scale = 8192.0

    /// Standard normal.
    public static let normal: [Int16] = table { standardNormalQuantile($0) }

    /// Pareto with shape α = 3 (x_m = 1: mean 3/2, variance 3/4), standardised to mean 0, σ 1.
    public static let pareto: [Int16] = table { (paretoQuantile($0) - 1.5) / 0.75.squareRoot() }

    /// The "paretonormal" mix: Z = (0.25·N + 0.75·P) / √0.625 with N standard normal and P the standardised
    /// pareto above, independent (mean 0, σ 1). Its CDF is computed on a grid by averaging Φ over pareto quantiles,
    /// then inverted by interpolation.
    public static let paretoNormal: [Int16] = {
        let paretoSamples = 2048
        let p = (0..<paretoSamples).map { (paretoQuantile((Double($0) + 0.5) / Double(paretoSamples)) - 1.5) / 0.75.squareRoot() }
        let norm = 0.625.squareRoot()
        // Beyond ±4.5 every entry clamps anyway (32767 / 8192 = 4).
        let (low, high, steps) = (-4.5, 4.5, 2000)
        let step = (high - low) / Double(steps)
        let grid = (0...steps).map { low + Double($0) * step }
        let cdf = grid.map { z in p.reduce(0.0) { $0 + phi((z * norm - 0.75 * $1) / 0.25) } / Double(paretoSamples) }
        var j = 0
        return table { u in
            if u <= cdf[0] { return low - 1 }
            while j < steps && cdf[j + 1] < u { j += 1 }
            if j == steps { return high + 1 }
            let t = (u - cdf[j]) / max(cdf[j + 1] - cdf[j], .leastNonzeroMagnitude)
            return grid[j] + t * step
        }
    }()

    /// `size` entries of `quantile` at the midpoints of equal probability slices, scaled and clamped to s16.
    static func table(_ quantile: (Double) -> Double) -> [Int16] {
        (0..<size).map { i in
            let v = (quantile((Double(i) + 0.5) / Double(size)) * scale).rounded()
            return Int16(max(Double(Int16.min), min(Double(Int16.max), v)))
        }
    }

    /// Standard normal CDF.
    static func phi(_ x: Double) -> Double { 0.5 * erfc(-x / 2.0.squareRoot()) }

    /// Inverse of `phi` by bisection (monotone, 64 halvings reach double precision on [-40, 40]).
    static func standardNormalQuantile(_ u: Double) -> Double {
        var (lo, hi) = (-40.0, 40.0)
        for _ in 0..<64 {
            let mid = (lo + hi) / 2
            if phi(mid) < u { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }

    /// Pareto(α = 3, x_m = 1) inverse CDF: (1 - u)^(-1/α).
    static func paretoQuantile(_ u: Double) -> Double { pow(1 - u, -1.0 / 3.0) }
}
